"""Real-time read latency (issue 4): Python API and HTTP, a report, not a test.

    python -m tests.perf.realtime [--reads 2000] [--orgs 10,1000,100000]
                                  [--events 1000,10000000] [--redis-db 14] [--breakdown]
                                  [--redis single,cluster] [--wait-quiet 600] [--json]
                                  [--save FILE]

Needs redis-server on 127.0.0.1 (``voicemon stack up``); Kafka is not used. The benchmark
owns Redis DB ``--redis-db`` (default 14): it flushes it at start and at the end, and
refuses a DB holding keys it did not write.

``--redis cluster`` (or ``single,cluster``, one after the other, one table) measures the
same reads on a Redis Cluster of three primaries the benchmark starts on free ports
(``tests.perf.redis_topologies``) with the persistence settings of the stack's primary, read
through a cluster client as the API opens it. A scope's buckets share one hash tag
(``voicemon.keys``), so a read is one call (``ZUNION`` in a one-line script) on the one node
holding them.

The rolling-counter buckets are written directly, with the key and field layout of
``voicemon/rolling.py`` and ``voicemon/keys.py`` (one sorted set per scope and minute,
counts and float ``*_sum`` scores, the writer's expiry). Two scopes are read: the platform and
one organization, each with a bucket for every minute of the window. Their field values
follow a 60-minute cycle, so any 60 consecutive minutes hold exactly ``--events`` events
(artifacts received/completed/failed plus every stage's started/completed/failed) and the
totals stay fixed while the window slides during the run; every bucket holds all 26 fields
(zeros included), so two event counts differ in the values only. Beside them, ``--orgs``
organizations each hold ``--org-minutes`` buckets (100,000 orgs x 3 minutes = 300,000
buckets), added as the scenarios go from fewer to more organizations.

For each number of organizations and of events in the window, it times ``--reads`` reads
after ``--warmup`` untimed ones (the warm-up reads and 50 of the timed ones are checked
against the written totals, event count included):

- ``python``: ``aggregators.query.realtime.read_realtime`` with a sync redis-py client (hiredis);
- ``http``: ``GET /v1/metrics/realtime`` with a staff token from ``aggregators.query.auth.mint``,
  one keep-alive httpx connection, against the app of ``aggregators.query.api.create_app`` served
  by uvicorn (as ``voicemon api`` does: uvloop, httptools) in a subprocess on a loopback
  port, with its own chDB store in a temporary directory. ``server mean`` is the app's own
  ``voicemon_api_request_seconds`` (routing, auth, the read, the response model), the
  rest of the HTTP time is uvicorn, the loopback socket and httpx.

Targets: Python read p99 <= 2 ms, HTTP p99 <= 10 ms. ``--breakdown`` adds where one Python
read's time goes (the bucket keys, the ``ZUNION``, the view).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis import Redis

from aggregators.query.auth import mint
from aggregators.query.realtime import _WINDOW_TOTALS, _Read, read_realtime
from tests.perf.redis_topologies import TOPOLOGIES, RedisTopology, TopologyError, single
from tests.perf.redis_topologies import cluster as start_cluster
from tests.perf.snapshots import busy_jobs, machine, revision, wait_quiet
from voicemon import keys
from voicemon.redis_client import SyncRedis
from voicemon.rolling import BUCKET_TTL_MS, MINUTE_MS, WINDOW_MINUTES, first_minute
from voicemon.settings import DEFAULT_STAGES, Settings

STAGES = DEFAULT_STAGES
MARKER = "vm:perf:realtime"  # the benchmark's claim on its Redis DB
MEASURED_ORG = "org-000000"
PYTHON_TARGET_MS, HTTP_TARGET_MS = 2.0, 10.0
ROUTE = "/v1/metrics/realtime"


class BenchError(Exception):
    """The benchmark cannot run, or a read returned the wrong totals."""


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- bucket contents ----------------------------------------------------------------------


def window_totals(events: int) -> dict[str, float]:
    """Counter totals of a window holding ``events`` events: 10 events per artifact."""
    artifacts = events // 10
    completed = artifacts * 9 // 10
    stage_completed = artifacts * 19 // 20
    totals: dict[str, float] = {
        "received": artifacts,
        "completed": completed,
        "failed": artifacts - completed,
        "latency_sum": completed * 45_000.25,
        "latency_n": completed,
        "cost_sum": artifacts * 0.081,
    }
    for stage in STAGES:
        prefix = f"stage:{stage}:"
        totals |= {
            prefix + "started": artifacts,
            prefix + "completed": stage_completed,
            prefix + "failed": artifacts - stage_completed,
            prefix + "duration_sum": stage_completed * 1_100.5,
            prefix + "duration_n": stage_completed,
        }
    return totals


def minute_pattern(totals: dict[str, float]) -> list[dict[str, int | float]]:
    """60 buckets summing exactly to ``totals``; minute m holds pattern[m % 60].

    Every bucket holds every field, zeros included, so that windows of 1,000 and of
    10,000,000 events differ only in the values, not in the number of fields read."""
    pattern: list[dict[str, int | float]] = []
    for j in range(WINDOW_MINUTES):
        bucket: dict[str, int | float] = {}
        for name, total in totals.items():
            if name.endswith("_sum"):
                bucket[name] = total / WINDOW_MINUTES
            else:
                whole = int(total)
                bucket[name] = whole * (j + 1) // WINDOW_MINUTES - whole * j // WINDOW_MINUTES
        pattern.append(bucket)
    return pattern


def write_buckets(
    redis: Redis, scopes: Sequence[str | None], minutes: range, pattern: list[dict[str, Any]]
) -> None:
    """ZADD every bucket of every scope (with the writer's expiry), 5,000 per round trip."""
    pipe = redis.pipeline(transaction=False)
    queued = 0
    for scope in scopes:
        for minute in minutes:
            key = keys.rolling_counter(scope, minute)
            pipe.delete(key)
            pipe.zadd(key, mapping=pattern[minute % WINDOW_MINUTES])
            pipe.pexpireat(key, minute * MINUTE_MS + BUCKET_TTL_MS)
            queued += 1
            if queued % 5000 == 0:
                pipe.execute()
    pipe.execute()


def check(result: dict[str, Any], events: int) -> None:
    """The read sums to the window's totals: ``events`` events, the written artifacts."""
    totals = window_totals(events)
    want = {"events": events, "artifacts_received": int(totals["received"])}
    got = {"events": events_in(result), "artifacts_received": result["artifacts_received"]}
    if got != want:
        raise BenchError(f"read {got}, expected {want}")


def events_in(result: dict[str, Any]) -> int:
    """Events the read's counters represent (as the table shows them)."""
    artifacts = sum(result[f"artifacts_{n}"] for n in ("received", "completed", "failed"))
    stages = sum(
        s[n] for s in result["stages"].values() for n in ("started", "completed", "failed")
    )
    return int(artifacts + stages)


# -- the HTTP server ----------------------------------------------------------------------


def serve(port: int, redis_url: str, store_dir: str, cluster: bool) -> None:
    """The query API on 127.0.0.1:``port`` (the subprocess the benchmark starts), its Redis
    client opened as ``voicemon api`` opens it (a cluster client on a cluster)."""
    from aggregators.query.api import create_app
    from aggregators.query.serve import server
    from voicemon.redis_client import open_async
    from voicemon.store import connect
    from voicemon.store_migrations import migrate

    settings = Settings(
        redis_url=redis_url, redis_cluster=cluster, clickhouse_dsn=f"chdb://{store_dir}"
    )
    store = connect(settings.clickhouse_dsn.get_secret_value())
    migrate(store)
    app = create_app(settings, store, open_async(settings))
    asyncio.run(server(app, "127.0.0.1", port, embedded=False).serve())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ApiServer:
    """``python -m tests.perf.realtime --serve`` in a subprocess, and a client for it."""

    def __init__(self, redis_url: str, secret: str, cluster: bool) -> None:
        self.port = free_port()
        self.store_dir = tempfile.mkdtemp(prefix="voicemon-perf-realtime-")
        env = os.environ | {"VOICEMON_JWT_SECRET": secret}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.perf.realtime", "--serve", str(self.port),
             "--redis-url", redis_url, "--store-dir", self.store_dir,
             *(["--redis-cluster"] if cluster else [])],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        token = mint(secret, "perf-realtime", staff=True, organization_id=None, ttl_s=7200)
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise BenchError(f"API server exited: {error[-2000:]}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise BenchError("API server not ready within 60 s")

    def server_seconds(self) -> tuple[float, float]:
        """(sum, count) of the app's own request time on the real-time route."""
        text = self.client.get("/metrics").text
        values = {"sum": 0.0, "count": 0.0}
        for line in text.splitlines():
            if line.startswith("voicemon_api_request_seconds_") and f'route="{ROUTE}"' in line:
                kind = line.split("{", 1)[0].rsplit("_", 1)[1]
                if kind in values:
                    values[kind] = float(line.rsplit(" ", 1)[1])
        return values["sum"], values["count"]

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.store_dir, ignore_errors=True)


# -- timing -------------------------------------------------------------------------------


@dataclass
class Cell:
    redis: str  # the topology: single or cluster
    path: str
    scope: str
    orgs: int
    events: int
    db_keys: int
    reads: int
    samples_ms: list[float] = field(repr=False)
    busy: list[str]
    server_mean_ms: float | None = None

    def quantile(self, p: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(int(p * len(ordered)), len(ordered) - 1)]

    @property
    def target_ms(self) -> float:
        return PYTHON_TARGET_MS if self.path == "python" else HTTP_TARGET_MS

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        del row["samples_ms"]
        return row | {
            "p50_ms": self.quantile(0.50),
            "p99_ms": self.quantile(0.99),
            "max_ms": max(self.samples_ms),
            "mean_ms": statistics.fmean(self.samples_ms),
            "target_ms": self.target_ms,
            "met": self.quantile(0.99) <= self.target_ms,
        }


def sample(
    read: Callable[[], Any], verify: Callable[[Any], None], reads: int, warmup: int
) -> list[float]:
    """Milliseconds of ``reads`` calls of ``read`` after ``warmup`` untimed ones.

    The warm-up results and 50 of the timed ones are verified afterwards; the others are
    dropped at once, so the heap (and this process's garbage collections) stays small."""
    for _ in range(warmup):
        verify(read())
    step = max(1, reads // 50)
    samples, kept = [], []
    gc.collect()
    for index in range(reads):
        started = time.perf_counter_ns()
        result = read()
        samples.append((time.perf_counter_ns() - started) / 1e6)
        if index % step == 0:
            kept.append(result)
    for result in kept:
        verify(result)
    return samples


def breakdown(redis: SyncRedis, org: str | None, reads: int) -> dict[str, float]:
    """Median microseconds of the steps of one ``read_realtime``, timed apart."""
    parts: dict[str, list[float]] = {"bucket keys": [], "ZUNION": [], "view": []}
    script = redis.register_script(_WINDOW_TOTALS)
    for _ in range(reads):
        t0 = time.perf_counter_ns()
        read = _Read.at(org, STAGES, None)
        names = read.keys
        t1 = time.perf_counter_ns()
        reply = script(keys=names)
        t2 = time.perf_counter_ns()
        read.view(reply)
        t3 = time.perf_counter_ns()
        for name, ns in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            parts[name].append(ns / 1000)
    return {name: statistics.median(values) for name, values in parts.items()}


# -- the benchmark ------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        base = Settings().redis_url.get_secret_value().rsplit("/", 1)[0]
        self.redis_url = f"{base}/{args.redis_db}"
        self.single = Redis.from_url(self.redis_url)
        self.topology: RedisTopology | None = None  # the one measured now
        self.redis: SyncRedis = self.single
        self.orgs_written = 1  # the measured organization
        self.claimed = False  # flushed at the end only once claimed (never somebody's data)
        self.exits = ExitStack()  # the cluster the benchmark starts
        self.cells: list[Cell] = []
        self.breakdowns: list[dict[str, Any]] = []
        self.server: ApiServer | None = None
        self.workdir = tempfile.mkdtemp(prefix="voicemon-perf-realtime-redis-")

    def claim_redis_db(self) -> None:
        if self.redis.dbsize() and not self.redis.exists(MARKER):
            raise BenchError(
                f"Redis DB {self.args.redis_db} holds keys that are not the benchmark's; "
                "choose another with --redis-db"
            )
        self.redis.flushdb()
        self.redis.set(MARKER, "tests.perf.realtime")
        self.claimed = True

    def window_minutes(self) -> range:
        """Every minute any read of the run may cover: the window now plus --ahead-minutes."""
        now_ms = int(time.time() * 1000)
        return range(first_minute(now_ms), now_ms // MINUTE_MS + self.args.ahead_minutes + 1)

    def add_orgs(self, total: int) -> None:
        """Background organizations up to ``total`` (the measured one included)."""
        if total <= self.orgs_written:
            return
        started = time.perf_counter()
        now_minute = int(time.time() * 1000) // MINUTE_MS
        minutes = range(now_minute - self.args.org_minutes + 1, now_minute + 1)
        pattern = minute_pattern(window_totals(600))
        names = [f"org-{i:06d}" for i in range(self.orgs_written, total)]
        write_buckets(self.redis, names, minutes, pattern)
        self.orgs_written = total
        progress(f"{total:,} organizations in Redis ({time.perf_counter() - started:.1f} s, "
                 f"{self.keys_in_db():,} keys)")  # fmt: skip

    def set_events(self, events: int) -> None:
        pattern = minute_pattern(window_totals(events))
        write_buckets(self.redis, [None, MEASURED_ORG], self.window_minutes(), pattern)

    def measure(self, orgs: int, events: int) -> None:
        for scope in (None, MEASURED_ORG):
            label = scope or "platform"
            verify = self.verifier(events)
            busy = wait_quiet(self.args.wait_quiet)
            samples = sample(
                lambda s=scope: read_realtime(self.redis, s, STAGES),
                verify, self.args.reads, self.args.warmup,
            )  # fmt: skip
            self.add_cell("python", label, orgs, events, samples, busy)
            if self.server is not None:
                self.measure_http(scope, label, orgs, events)
            if self.args.breakdown:
                parts = breakdown(self.redis, scope, self.args.reads)
                self.breakdowns.append(
                    {"scope": label, "orgs": orgs, "events": events, "median_us": parts}
                )

    def measure_http(self, scope: str | None, label: str, orgs: int, events: int) -> None:
        assert self.server is not None
        client = self.server.client
        params = {} if scope is None else {"organization_id": scope}
        verify = self.verifier(events)
        busy = wait_quiet(self.args.wait_quiet)
        before = self.server.server_seconds()
        samples = sample(
            lambda: client.get(ROUTE, params=params),
            lambda response: verify(response.raise_for_status().json()),
            self.args.reads, self.args.warmup,
        )  # fmt: skip
        after = self.server.server_seconds()
        cell = self.add_cell("http", label, orgs, events, samples, busy)
        requests = after[1] - before[1]
        cell.server_mean_ms = (after[0] - before[0]) / requests * 1000 if requests else None

    def verifier(self, events: int) -> Callable[[Any], None]:
        return lambda result: check(result, events)

    def add_cell(
        self, path: str, scope: str, orgs: int, events: int, samples: list[float], busy: list[str]
    ) -> Cell:
        busy = sorted(set(busy) | set(busy_jobs()))
        assert self.topology is not None
        name, size = self.topology.name, self.keys_in_db()
        cell = Cell(name, path, scope, orgs, events, size, len(samples), samples, busy)
        self.cells.append(cell)
        progress(f"{name} {path} {scope} orgs={orgs:,} events={events:,}: "
                 f"p50 {cell.quantile(0.5):.3f} ms, p99 {cell.quantile(0.99):.3f} ms")  # fmt: skip
        return cell

    def run(self) -> None:
        for name in self.args.redis:
            try:
                self.topology = self.open_topology(name)
            except TopologyError as error:
                raise BenchError(str(error)) from error
            progress(f"redis {name}: {self.topology.shards} primary(ies), "
                     f"{self.topology.persistence}, {self.topology.url}")  # fmt: skip
            self.redis = self.topology.client()
            self.orgs_written = 1
            self.claim_redis_db()
            if "http" in self.args.paths:
                secret = secrets.token_urlsafe(32)
                self.server = ApiServer(self.topology.url, secret, self.topology.cluster)
            for orgs in sorted(self.args.orgs):
                self.add_orgs(orgs)
                for events in self.args.events:
                    self.set_events(events)
                    self.measure(orgs, events)
            self.close_topology()

    def open_topology(self, name: str) -> RedisTopology:
        """This benchmark's DB of the stack's primary, or a three-primary cluster started
        here with that primary's persistence settings."""
        if name == "single":
            return single(self.redis_url, [])
        return self.exits.enter_context(start_cluster(Path(self.workdir) / "cluster", self.single))

    def keys_in_db(self) -> int:
        """Keys in the measured DB, over every node of a cluster."""
        assert self.topology is not None
        return sum(int(node.dbsize()) for node in self.topology.nodes)

    def close_topology(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.claimed:
            self.redis.flushdb()
        self.claimed = False
        if self.redis is not self.single:
            self.redis.close()
        self.redis = self.single

    def cleanup(self) -> None:
        self.close_topology()
        self.exits.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- output -------------------------------------------------------------------------------


def table(cells: Sequence[Cell]) -> str:
    lines = [
        "| redis | path | scope | orgs in Redis | events in window | keys in DB | p50 ms | "
        "p99 ms | max ms | server mean ms | target p99 ms | met |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in cells:
        server = "-" if c.server_mean_ms is None else f"{c.server_mean_ms:.3f}"
        busy = " (other jobs running)" if c.busy else ""
        met = c.quantile(0.99) <= c.target_ms
        lines.append(
            f"| {c.redis} | {c.path}{busy} | {c.scope} | {c.orgs:,} | {c.events:,} | "
            f"{c.db_keys:,} | {c.quantile(0.5):.3f} | {c.quantile(0.99):.3f} | "
            f"{max(c.samples_ms):.3f} | {server} | {c.target_ms:g} | {'yes' if met else '**no**'} |"
        )
    return "\n".join(lines)


def spread(cells: Sequence[Cell]) -> list[str]:
    """Per path and scope: the p50 range over every org count and event count (O(1) check)."""
    lines = []
    for redis, path, scope in sorted({(c.redis, c.path, c.scope) for c in cells}):
        key = (redis, path, scope)
        p50s = [c.quantile(0.5) for c in cells if (c.redis, c.path, c.scope) == key]
        if p50s:
            lines.append(f"{redis} {path} {scope}: p50 from {min(p50s):.3f} to {max(p50s):.3f} ms "
                         f"over {len(p50s)} (orgs, events) cells")  # fmt: skip
    return lines


def report(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    return {
        "command": " ".join(["python", "-m", "tests.perf.realtime", *sys.argv[1:]]),
        "revision": revision(),
        "machine": machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": vars(args),
        "loadavg_at_end": os.getloadavg(),
        "cells": [c.as_dict() for c in bench.cells],
        "breakdowns": bench.breakdowns,
    }


def _topologies(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(TOPOLOGIES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"takes {','.join(TOPOLOGIES)}, not {text!r}")
    return names


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.realtime", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--reads", type=int, default=2000, help="timed reads per cell")
    parser.add_argument("--warmup", type=int, default=200, help="untimed reads per cell")
    parser.add_argument("--orgs", type=_ints, default=[10, 1000, 100_000])
    parser.add_argument("--events", type=_ints, default=[1000, 10_000_000])
    parser.add_argument("--org-minutes", type=int, default=3, help="buckets per background org")
    parser.add_argument("--ahead-minutes", type=int, default=30, help="buckets past now")
    parser.add_argument("--paths", default="python,http", help="python, http or both")
    parser.add_argument(
        "--redis", type=_topologies, default=["single"],
        help="single (the stack's primary) and/or cluster (three primaries started here, "
        "with the single primary's persistence settings), measured one after the other",
    )  # fmt: skip
    parser.add_argument("--redis-db", type=int, default=14, help="owned and flushed by the bench")
    parser.add_argument("--breakdown", action="store_true", help="time a Python read's steps")
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0,
        help="wait up to this many seconds for other test jobs to end before each cell",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--save", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--store-dir", help=argparse.SUPPRESS)
    parser.add_argument("--redis-cluster", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.redis_url, args.store_dir, args.redis_cluster)
        return 0
    bench = Bench(args)
    try:
        bench.run()
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
    document = report(args, bench)
    encoded = orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str)
    if args.save:
        args.save.write_bytes(encoded)
    if args.json:
        print(encoded.decode())
        return 0
    print(f"{document['machine']}; revision {document['revision']}; {document['measured_at']}")
    print(table(bench.cells))
    print("\n" + "\n".join(spread(bench.cells)))
    for parts in bench.breakdowns:
        steps = ", ".join(f"{k} {v:.0f} µs" for k, v in parts["median_us"].items())
        print(f"breakdown {parts['scope']} orgs={parts['orgs']:,} events={parts['events']:,}: "
              f"{steps}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
