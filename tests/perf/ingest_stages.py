"""Where one batch's time goes inside ``Ingest.process``, without Kafka or Faust.

    python -m tests.perf.ingest_stages [--events 200000] [--batch-size 500] [--take 20] [--cpu]

Builds the worker's own ``Ingest`` (``runtime.worker.WorkerParts``: real Redis DB, real
chDB store in a temporary directory, real DLQ publisher), feeds it messages generated with
``voicemon.devtools.loadgen.LoadMix`` (``--batch-size`` events per message, ``--take`` messages per
``process`` call, like one ``noack_take`` batch), and times each stage by wrapping the
functions ``process`` calls. Nested stages are marked with "of which". Redis server time is
the server's own ``commandstats`` (all clients). Compare the events/s with the worker's in
``tests.perf.ingest``: the difference is Faust's per-message delivery and the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import itertools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from tests.perf.ingest import BENCH_MARKER, BenchError
from voicemon.devtools.loadgen import LoadMix
from voicemon.settings import Settings

# (module, class or None, attribute, label): wrapped when present, so the list survives
# refactors of the ingest code; labels starting with "  " are nested in the one above.
STAGES: tuple[tuple[str, str | None, str, str], ...] = (
    ("consumers.ingest", "Ingest", "_decode", "decode + validate (all of Ingest._decode)"),
    ("voicemon.event", None, "validate_event", "  of which validate_event"),
    ("consumers.publish_once", "OncePublisher", "publish_once", "DLQ (exactly once)"),
    ("consumers.ingest", "Ingest", "_count_once", "count once (dedup + counters)"),
    (
        "consumers.rolling_counters",
        "RollingCounters",
        "owners",
        "  of which Redis seen-marker lookup",
    ),
    ("consumers.ingest", None, "classify", "  of which classify"),
    ("voicemon.rolling", None, "increments", "  of which rolling increments"),
    ("consumers.rolling_counters", "RollingCounters", "claim", "  of which Redis claim script"),
    ("consumers.rolling_counters", "RollingCounters", "add", "  of which Redis counters script"),
    ("consumers.ingest", "Ingest", "_missing_rows", "ClickHouse replay check"),
    ("consumers.raw_writer", "RawWriter", "write", "ClickHouse insert (RawWriter.write)"),
    ("consumers.raw_writer", None, "raw_columns", "  of which building columns"),
    ("consumers.ingest", None, "written_windows", "window bookkeeping (written_windows)"),
    ("consumers.store_progress", "StoreProgress", "record_written", "Redis: store progress"),
    ("consumers.ingest", None, "_observe", "Prometheus observe"),
)

TIMES: dict[str, float] = defaultdict(float)
# perf_counter (wall) by default; thread_time with --cpu: this thread's CPU, what a busy machine
# does not inflate (waits on Redis and chDB then count nothing).
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def _timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = CLOCK[0]()
            try:
                return await function(*args, **kwargs)
            finally:
                TIMES[label] += CLOCK[0]() - started

        return timed_async

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = CLOCK[0]()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[label] += CLOCK[0]() - started

    return timed


def instrument() -> list[str]:
    """Wrap every stage that exists; return the labels wrapped, in order."""
    wrapped = []
    for module_name, class_name, attribute, label in STAGES:
        module = importlib.import_module(module_name)
        owner: Any = getattr(module, class_name) if class_name else module
        function = getattr(owner, attribute, None)
        if function is None:
            continue
        setattr(owner, attribute, _timed(label, function))
        if class_name is None:  # also where it was imported by name
            for user in ("consumers.ingest", "consumers.decode"):
                used = importlib.import_module(user)
                if getattr(used, attribute, None) is function:
                    setattr(used, attribute, getattr(owner, attribute))
        wrapped.append(label)
    return wrapped


def messages(events: int, batch_size: int, seed: int, stages: Sequence[str]) -> list[Any]:
    from consumers.batch import Message

    mix = LoadMix(seed=seed, organizations=100, stages=stages)
    clock = (int(time.time() * 1000) for _ in itertools.count())
    bodies = list(itertools.islice(mix.stream(clock), events))
    found = []
    for index, start in enumerate(range(0, len(bodies), batch_size)):
        chunk = bodies[start : start + batch_size]
        value = orjson.dumps(chunk if batch_size > 1 else chunk[0])
        found.append(Message(index % 4, index // 4, b"k", value))
    return found


def redis_usec(redis: Redis) -> dict[str, tuple[int, int]]:
    """Per command, its calls and server microseconds so far (commands run by scripts
    included: they are counted inside their script's time, too)."""
    stats = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(row["calls"]), int(row["usec"]))
            for name, row in stats.items()}  # fmt: skip


async def run(args: argparse.Namespace, redis: Redis) -> int:
    from runtime.worker import WorkerParts

    ingest = (await WorkerParts(Settings()).get()).ingest
    labels = instrument()
    batch = messages(args.events, args.batch_size, args.seed, Settings().stages)
    before = redis_usec(redis)
    TIMES.clear()
    started = CLOCK[0]()
    counted = 0
    for first in range(0, len(batch), args.take):
        outcome = await ingest.process(batch[first : first + args.take])
        counted += outcome.counted
    wall = CLOCK[0]() - started
    after = redis_usec(redis)
    if counted != args.events:
        raise BenchError(f"counted {counted} of {args.events} events")
    calls = -(-len(batch) // args.take)
    print(
        f"Ingest.process alone: {args.events:,} events in {len(batch):,} messages, "
        f"{calls:,} calls of {args.take} messages: {wall:.2f} s, "
        f"{args.events / wall:,.0f} events/s"
    )
    print(f"{'stage':<46} {'seconds':>8} {'us/event':>9} {'share':>6}")
    top = 0.0
    for label in labels:
        seconds = TIMES.get(label, 0.0)
        if not label.startswith(" "):
            top += seconds
        print(
            f"{label:<46} {seconds:>8.2f} {seconds / args.events * 1e6:>9.2f}"
            f" {seconds / wall:>6.1%}"
        )
    rest = wall - top
    print(
        f"{'rest of process (lists, DLQ, asyncio)':<46} {rest:>8.2f}"
        f" {rest / args.events * 1e6:>9.2f} {rest / wall:>6.1%}"
    )
    print(f"{'Redis command (all clients)':<46} {'calls':>8} {'per 1k ev':>9} {'us/event':>9}")
    for command, (calls, usec) in sorted(after.items(), key=lambda item: -item[1][1]):
        calls -= before.get(command, (0, 0))[0]
        usec -= before.get(command, (0, 0))[1]
        if calls:
            print(f"{command:<46} {calls:>8,} {calls / args.events * 1e3:>9.1f}"
                  f" {usec / args.events:>9.2f}")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.ingest_stages")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=500, help="events per message")
    parser.add_argument("--take", type=int, default=20, help="messages per Ingest.process")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--redis-db", type=int, default=15, help="owned and flushed")
    parser.add_argument("--cpu", action="store_true", help="time this thread's CPU, not wall")
    args = parser.parse_args(argv)
    if args.cpu:
        CLOCK[0] = time.thread_time

    settings = Settings()
    workdir = Path(tempfile.mkdtemp(prefix="voicemon-stages-"))
    base = settings.redis_url.get_secret_value().rsplit("/", 1)[0]
    redis_url = f"{base}/{args.redis_db}"
    redis = Redis.from_url(redis_url)
    if redis.dbsize() and not redis.exists(BENCH_MARKER):
        print(f"Redis DB {args.redis_db} is not the benchmark's; use --redis-db", file=sys.stderr)
        return 1
    redis.flushdb()
    redis.set(BENCH_MARKER, "tests.perf.ingest_stages")
    os.environ.update(
        {
            "VOICEMON_REDIS_URL": redis_url,
            "VOICEMON_CLICKHOUSE_DSN": f"chdb://{workdir / 'clickhouse'}",
            "VOICEMON_DLQ_TOPIC": f"bench-{uuid.uuid4().hex[:8]}.events.dlq",
            "VOICEMON_WORKER_DATA_DIR": str(workdir / "faust"),
            "VOICEMON_CLOSER_ENABLED": "false",
        }
    )
    try:
        return asyncio.run(run(args, redis))
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        redis.flushdb()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
