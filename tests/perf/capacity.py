"""The capacity model: per-event CPU of the worker, Redis and the store measured here, and the
deployment that sustains 10k, 100k and 1M events/s.

    python -m tests.perf.capacity [--events 100000] [--batch-size 500] [--take 20]

Runs the worker's own ``Ingest`` (``runtime.worker.WorkerParts``) in this process over
batch messages from ``voicemon.devtools.loadgen.LoadMix`` (3% duplicates), against a
redis-server of its own (started on a free port, so its CPU is this run's alone) and the
embedded store in a temporary directory. It measures:

- worker CPU per event: the CPU of the event-loop thread (decode, classify, Redis client,
  Arrow columns), plus Faust's own delivery per message (``FAUST_US_PER_MESSAGE``,
  docs/faust-overhead.md) spread over a message's events;
- store CPU per event: the rest of this process's CPU: the threads running the inserts and
  lookups and the engine's own threads (chDB is the ClickHouse engine in-process; a server
  spends about the same per row, plus the network);
- Redis CPU per event: the server's ``used_cpu_user + used_cpu_sys``.

The formula (``deployment``), for a rate R and a target utilisation U of a core:
workers = ceil(R x worker_us / 1e6 / U) (one core each: the worker is one Python process);
partitions = 2 x workers (room to double without repartitioning); Redis primaries =
ceil(R x redis_us / 1e6 / U), each with one replica (``VOICEMON_REDIS_WAIT_REPLICAS=1``);
Redis memory = R x ``DEDUP_GB_PER_KEPS`` / 1000 (the markers' 80-100 minutes, measured by
``tests.perf.dedup_memory``); ClickHouse shards = ceil(R x store_us / 1e6 / U /
``CLICKHOUSE_CORES``), two replicas each, inserts of >= 1,000 rows about once a second per
writer (ClickHouse's published guidance for MergeTree inserts).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from tests.perf.ingest import BenchError, free_port
from voicemon.devtools.loadgen import LoadMix
from voicemon.settings import Settings

FAUST_US_PER_MESSAGE = 40.0  # bare Faust agent, CPU per message (docs/faust-overhead.md)
DEDUP_GB_PER_KEPS = 0.218  # Redis dedup state per 1,000 events/s (docs/performance.md)
UTILISATION = 0.7  # of a core, leaving room for bursts and catch-up
CLICKHOUSE_CORES = 16  # cores of one ClickHouse server
RATES = (10_000, 100_000, 1_000_000)


@dataclass(frozen=True, slots=True)
class PerEvent:
    """Microseconds of CPU per event, and the worker's peak memory."""

    worker_us: float
    redis_us: float
    store_us: float
    worker_rss_mb: float


@dataclass(frozen=True, slots=True)
class Deployment:
    rate: int
    workers: int
    partitions: int
    redis_primaries: int
    redis_memory_gb: float
    clickhouse_shards: int
    worker_memory_gb: float


def deployment(rate: int, cost: PerEvent) -> Deployment:
    """The deployment that sustains ``rate`` events/s at ``cost`` (pure: the formula)."""
    workers = max(1, math.ceil(rate * cost.worker_us / 1e6 / UTILISATION))
    redis = max(1, math.ceil(rate * cost.redis_us / 1e6 / UTILISATION))
    store_cores = rate * cost.store_us / 1e6 / UTILISATION
    return Deployment(
        rate=rate,
        workers=workers,
        partitions=2 * workers,
        redis_primaries=redis,
        redis_memory_gb=round(rate * DEDUP_GB_PER_KEPS / 1000, 1),
        clickhouse_shards=max(1, math.ceil(store_cores / CLICKHOUSE_CORES)),
        worker_memory_gb=round(workers * cost.worker_rss_mb / 1024, 1),
    )


def table(cost: PerEvent) -> str:
    lines = [
        "| events/s | workers (1 core each) | partitions | Redis primaries (+1 replica each) "
        "| Redis memory | ClickHouse shards (x2 replicas) | worker memory |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rate in RATES:
        d = deployment(rate, cost)
        lines.append(
            f"| {rate:,} | {d.workers} | {d.partitions} | {d.redis_primaries} "
            f"| {d.redis_memory_gb} GB | {d.clickhouse_shards} | {d.worker_memory_gb} GB |"
        )
    return "\n".join(lines)


def _messages(events: int, batch_size: int, seed: int, stages: Sequence[str]) -> list[Any]:
    from consumers.batch import Message

    mix = LoadMix(seed=seed, organizations=100, stages=stages, duplicate_share=0.03)
    clock = (int(time.time() * 1000) for _ in itertools.count())
    bodies = list(itertools.islice(mix.stream(clock), events))
    return [
        Message(index % 4, index // 4, b"k", orjson.dumps(bodies[start : start + batch_size]))
        for index, start in enumerate(range(0, len(bodies), batch_size))
    ]


def _redis_cpu(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _measure(args: argparse.Namespace, redis: Redis) -> PerEvent:
    from runtime.worker import WorkerParts

    ingest = (await WorkerParts(Settings()).get()).ingest
    batch = _messages(args.events, args.batch_size, args.seed, Settings().stages)
    await ingest.process(batch[: args.take])  # warm up: scripts loaded, store opened
    redis_before, cpu_before = _redis_cpu(redis), time.process_time()
    loop_before = time.thread_time()
    counted = duplicates = 0
    for first in range(args.take, len(batch), args.take):
        outcome = await ingest.process(batch[first : first + args.take])
        counted, duplicates = counted + outcome.counted, duplicates + outcome.duplicates
    events = counted + duplicates
    if not events:
        raise BenchError("nothing was counted")
    loop = time.thread_time() - loop_before
    process = time.process_time() - cpu_before
    redis_cpu = _redis_cpu(redis) - redis_before
    per_message = FAUST_US_PER_MESSAGE / args.batch_size
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return PerEvent(
        worker_us=round(loop / events * 1e6 + per_message, 2),
        redis_us=round(redis_cpu / events * 1e6, 2),
        store_us=round((process - loop) / events * 1e6, 2),
        worker_rss_mb=round(rss_mb, 1),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.capacity")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500, help="events per message")
    parser.add_argument("--take", type=int, default=20, help="messages per Ingest.process")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args(argv)
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server is not installed", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="voicemon-capacity-"))
    port = free_port()
    redis_process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        redis = Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        os.environ.update({
            "VOICEMON_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "VOICEMON_CLICKHOUSE_DSN": f"chdb://{workdir / 'clickhouse'}",
            "VOICEMON_DLQ_TOPIC": f"capacity-{uuid.uuid4().hex[:8]}.events.dlq",
            "VOICEMON_WORKER_DATA_DIR": str(workdir / "faust"),
            "VOICEMON_CLOSER_ENABLED": "false",
        })  # fmt: skip
        cost = asyncio.run(_measure(args, redis))
    except BenchError as error:
        print(f"capacity run failed: {error}", file=sys.stderr)
        return 1
    finally:
        redis_process.send_signal(signal.SIGTERM)
        redis_process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average before the run: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(
        f"per event: worker {cost.worker_us} us CPU (incl. Faust {FAUST_US_PER_MESSAGE} us per "
        f"message of {args.batch_size}), Redis {cost.redis_us} us, store {cost.store_us} us; "
        f"worker peak RSS {cost.worker_rss_mb} MB"
    )
    print(
        f"formula: workers = ceil(R x {cost.worker_us} us / {UTILISATION}), partitions = 2 x "
        f"workers, Redis primaries = ceil(R x {cost.redis_us} us / {UTILISATION}) (+1 replica), "
        f"Redis memory = R x {DEDUP_GB_PER_KEPS} GB / 1000, ClickHouse shards = "
        f"ceil(R x {cost.store_us} us / {UTILISATION} / {CLICKHOUSE_CORES} cores) (x2 replicas)"
    )
    print(table(cost))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
