"""Ingest throughput of one worker process, against two ceilings over the same messages.

    python -m tests.perf.ingest [--events 1000000] [--batch-size 500] [--single-events 150000]
                                [--paths confluent,faust,peer,worker] [--peer-venv DIR]
                                [--variant VOICEMON_BATCH_MAX_MESSAGES=50 ...] [--profile DIR]
                                [--redis single,cluster] [--reads 1000] [--json]

Needs the local stack (``voicemon stack up``); every byte goes to 127.0.0.1. ``--redis``
names the Redis topologies the worker runs on (``single``: the stack's primary, a DB of the
benchmark's; ``cluster``: three primaries the benchmark starts, with the primary's
persistence settings); the ceilings and the peer run once, on the single primary. The messages
are generated with ``voicemon.devtools.loadgen.LoadMix`` (all valid, all unique, occurred_at within
the last minutes) and published once, before any timing, to fresh topics: one with a single
event per message, one with batches as ``EventProducer`` sends them. Then, for each form:

1. ``confluent``: a bare confluent-kafka ``consume(1000)`` + ``orjson.loads`` loop in this
   process, timed from the first message received to the last end offset;
2. ``faust``: a bare Faust agent that only decodes (``tests/perf/faust_bare.py``, its own
   group), a subprocess, timed by itself from its first message to its last;
3. ``worker``: ``python -m runtime worker`` as a subprocess with its own consumer group,
   Redis DB (flushed) and chDB directory, timed from the moment its group is assigned the
   partitions (polled with the admin API every 0.1 s, so Python start-up, chDB start and
   migrations are excluded) until the group's committed offsets reach the end offsets.
   Faust commits every second (``VOICEMON_KAFKA_COMMIT_INTERVAL_SECONDS``; the peer too), so
   this includes up to one commit interval of waiting at the end; ``durable s`` (until the
   ClickHouse row counter on ``/metrics``, read every 0.5 s, reaches the event count) is reported
   beside it.
   Peak RSS is the worker's ``VmHWM``. The window closer is off unless ``--closer`` (on a
   fresh Redis DB it first catches up 48 hours of empty windows, which is not ingest work).
4. ``peer``: the same job written with Quix Streams (``tests/perf/peer/quix_ingest.py``,
   measured as written), a subprocess in its own virtual environment (Quix Streams pins
   confluent-kafka below 2.13), which this benchmark creates once under ``--peer-venv``
   (``var/bench/quix-venv``) and reuses while its marker matches the requirements. It gets
   a flushed Redis DB, a fresh chDB directory and its own consumer group, reads batches with
   ``--expand``, and is timed by itself: from its first sink write until N events are
   consumed (it prints the rate, which is parsed); the events of its first checkpoint (up to
   1 s or 20,000 messages) count without the time spent reading them, which flatters it
   at small N (at the issue's 150,000 messages, by up to about a tenth). Row ``peer`` runs
   with ``--dedup`` (exact ``event_id`` dedup in Redis, as the worker does: the ``x peer``
   column divides by it); ``peer (no dedup)`` is a reference row on the forms of
   ``--peer-no-dedup`` (single).
   Its CPU comes from /proc samples taken every 50 ms, over the samples closest to the
   interval it reports.

CPU is reported per path as cores (``CPU``: the path's own process, all threads; ``redis``:
the redis-server of ``VOICEMON_REDIS_URL``) and per event in microseconds (``CPU us/ev``,
``redis us/ev``), so a deployment can be sized from them. Only the Redis server and Kafka
broker listening on this benchmark's ports are counted as the stack.

The table's ``other`` column is the cores used meanwhile by processes that are neither the
path, Redis, Kafka nor this benchmark: above ~0.2 another job was competing and the run is
noisy. ``docs/performance.md`` holds the figures measured and how to read them.

``--variant`` runs the worker once more per variant, with extra environment variables
(e.g. ``VOICEMON_BATCH_MAX_MESSAGES=50,VOICEMON_BATCH_MAX_SECONDS=0.2``). ``--profile DIR``
adds a worker run per form under ``py-spy record`` (pip install py-spy) and prints
where the time goes. Worker runs are checked afterwards: every event counted once, none
rejected, one ClickHouse row each.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from redis import Redis

from aggregators.query.realtime import read_realtime
from tests.perf.peer_venv import PEER_SCRIPT, PeerVenvError, ensure_peer_venv
from tests.perf.redis_topologies import (
    TOPOLOGIES,
    RedisTopology,
    TopologyError,
    flush_cluster,
    single,
)
from tests.perf.redis_topologies import cluster as start_cluster
from voicemon.devtools.loadgen import LoadMix
from voicemon.producer import EventProducer
from voicemon.rolling import MINUTE_MS, WINDOW_MINUTES
from voicemon.settings import Settings
from voicemon.topics import LOG_APPEND_TIME, TIMESTAMP_TYPE, TopicSpec, ensure

ROOT = Path(__file__).resolve().parents[2]
BENCH_MARKER = "vm:bench:owner"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The worker's /metrics is read for the durable time this often (a scrape costs it ~5 ms of
# CPU; Prometheus scrapes every 15 s): ``durable s`` is known to this resolution.
SCRAPE_EVERY_S = 0.5


class BenchError(Exception):
    """The benchmark could not run or its result is not trustworthy; the message says why."""


def claim_redis_db(redis: Redis, db: int, marker: str, owner: str) -> None:
    """Flush the benchmark's Redis DB and mark it ``owner``'s, unless it holds keys without
    ``marker`` (somebody else's data)."""
    if redis.dbsize() and not redis.exists(marker):
        raise BenchError(
            f"Redis DB {db} holds keys that are not the benchmark's; choose another with --redis-db"
        )
    redis.flushdb()
    redis.set(marker, owner)


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Form:
    """One message form, published once: its topic, end offsets and counts."""

    name: str
    topic: str
    events: int
    ends: dict[int, int]
    first_ms: int = 0  # when publishing began (the earliest occurred_at, give or take)
    expected: dict[str | None, Counts] = field(default_factory=dict)  # per scope (None: platform)

    @property
    def messages(self) -> int:
        return sum(self.ends.values())


@dataclass(slots=True)
class Result:
    form: str
    path: str
    events: int
    messages: int
    seconds: float
    cpu_seconds: float | None = None
    peak_rss_kb: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def cores(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / self.seconds

    @property
    def cpu_us_per_event(self) -> float | None:
        """CPU of the path's own process per event (all its threads), in microseconds."""
        if self.cpu_seconds is None or not self.events:
            return None
        return self.cpu_seconds / self.events * 1e6

    @property
    def redis_us_per_event(self) -> float | None:
        """CPU of the Redis server per event meanwhile, in microseconds."""
        redis_cores = (self.extra.get("cores") or {}).get("redis")
        if redis_cores is None or not self.events:
            return None
        return float(redis_cores) * self.seconds / self.events * 1e6

    @property
    def redis_us_per_event_each(self) -> list[float]:
        """CPU of each Redis shard (redis-server process) per event, in microseconds."""
        shards = self.extra.get("redis_shard_cores") or []
        if not self.events:
            return []
        return [float(cores) * self.seconds / self.events * 1e6 for cores in shards]


def read_p99(read: Callable[[], object], reads: int) -> float:
    """The nearest-rank 99th percentile of ``reads`` timed calls of ``read``, in ms, after
    a tenth as many untimed ones."""
    for _ in range(max(1, reads // 10)):
        read()
    samples = []
    for _ in range(reads):
        started = time.perf_counter_ns()
        read()
        samples.append((time.perf_counter_ns() - started) / 1e6)
    samples.sort()
    return samples[min(int(0.99 * len(samples)), len(samples) - 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- /proc --------------------------------------------------------------------------------


def status_kb(pid: int, name: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in KiB, None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds spent by all cores, all processes, since boot (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS


def pids_running(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (e.g. the broker, redis-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in command and b"tests.perf" not in command:
            found.append(int(entry.name))
    return found


Stack = tuple[list[int], list[int]]  # pids of redis-server, of the Kafka broker


def stack_pids(redis_url: str, bootstrap: str) -> Stack:
    """The Redis server and Kafka broker this benchmark talks to: the processes listening on
    their ports (other stacks on the machine count as ``other``)."""
    redis_port = int(redis_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    kafka_port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    return (
        pids_listening(redis_port) or pids_running(f"redis-server 127.0.0.1:{redis_port}"),
        pids_listening(kafka_port) or pids_running("kafka.Kafka"),
    )


def pids_listening(port: int) -> list[int]:
    """Processes with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                found.add(int(entry.name))
        except OSError:
            continue
    return sorted(found)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds so far of the worker, the stack, this process and the whole machine."""

    worker: float
    redis: float
    kafka: float
    bench: float
    machine: float
    redis_each: tuple[float, ...] = ()  # per redis-server process (a shard), as ``redis``

    @classmethod
    def take(cls, worker: int | None, redis: Sequence[int], kafka: Sequence[int]) -> CpuSnapshot:
        each = tuple(_cpu_or_zero(pid) for pid in redis)
        return cls(
            0.0 if worker is None else cpu_seconds(worker),
            sum(each),
            sum(_cpu_or_zero(pid) for pid in kafka),
            time.process_time(),
            machine_busy_seconds(),
            each,
        )

    def redis_cores_each(self, earlier: CpuSnapshot, seconds: float) -> list[float]:
        """Cores used by each redis-server (each shard) in between."""
        pairs = zip(self.redis_each, earlier.redis_each, strict=True)
        return [(now - before) / seconds for now, before in pairs]

    def cores_since(self, earlier: CpuSnapshot, seconds: float) -> dict[str, float]:
        """Cores used by each in between; ``other`` is everything else on the machine."""
        used = {
            "worker": self.worker - earlier.worker,
            "redis": self.redis - earlier.redis,
            "kafka": self.kafka - earlier.kafka,
            "bench": self.bench - earlier.bench,
        }
        other = self.machine - earlier.machine - sum(used.values())
        return {name: value / seconds for name, value in (used | {"other": other}).items()}


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


# -- Kafka --------------------------------------------------------------------------------


def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int, events_topic: str | None = None
) -> None:
    """Create the topics as ``voicemon topics ensure`` would, so that a worker starts on them:
    log-append time, and a DLQ (a name ending in ``.dlq``) whose size limit exceeds that of
    ``events_topic`` (default: the first other name) by ``voicemon.topics``' headroom."""
    events_topic = events_topic or next(name for name in names if not name.endswith(".dlq"))
    specs = [
        TopicSpec(name, partitions, 1, headroom_over=events_topic)
        if name.endswith(".dlq")
        else TopicSpec(name, partitions, 1, enforced={TIMESTAMP_TYPE: LOG_APPEND_TIME})
        for name in names
    ]
    ensure(bootstrap, sorted(specs, key=lambda spec: spec.headroom_over is not None))


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(names)).values():
        try:
            future.result(timeout=30)
        except Exception as error:
            print(f"warning: could not delete a bench topic: {error}", file=sys.stderr)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in sorted(partitions)
        }
    finally:
        consumer.close()


def publish(
    bootstrap: str,
    topic: str,
    *,
    events: int,
    batch_size: int,
    seed: int,
    stages: Sequence[str],
    tally: Counter[Kind] | None = None,
) -> dict[int, int]:
    """Publish ``events`` valid, unique events; batches of ``batch_size`` unless it is 1.
    Each event's (organization, event type, stage) is counted into ``tally``."""
    batched = batch_size > 1
    producer = EventProducer(
        bootstrap,
        topic,
        max_events=batch_size,
        linger_s=3600.0,
        batch=batched,
        validate=False,
        overflow="block",
        block_timeout_s=120,  # every event must arrive: wait, never drop
    )
    mix = LoadMix(seed=seed, organizations=100, stages=stages)
    clock = (int(time.time() * 1000) for _ in itertools.count())
    for body in itertools.islice(mix.stream(clock), events):
        assert isinstance(body, dict)  # no malformed share configured
        producer.send(body)
        if tally is not None:
            tally[body.get("organization_id"), body["event_type"], body.get("stage")] += 1
    producer.flush(timeout_s=120)
    return end_offsets(bootstrap, topic)


Kind = tuple[str | None, str, str | None]  # organization, event type, stage
Counts = dict[str, Any]  # the counters of a real-time view, as ``realtime_counts`` keeps them


def realtime_counts(view: dict[str, Any]) -> Counts:
    """The event counters of a real-time view (``aggregators.query.realtime.read_realtime``)."""
    names = ("artifacts_received", "artifacts_completed", "artifacts_failed")
    return {name: view[name] for name in names} | {
        stage: {k: row[k] for k in ("started", "completed", "failed")}
        for stage, row in view["stages"].items()
    }


def expected_counts(tally: Counter[Kind], stages: Sequence[str]) -> dict[str | None, Counts]:
    """What the real-time views of the platform (None) and of each organization must count
    once every published event is counted once (none is a duplicate, none is late)."""
    scopes: dict[str | None, Counts] = {}
    for organization in {None} | {kind[0] for kind in tally}:
        mine = {k: n for k, n in tally.items() if organization is None or k[0] == organization}
        counts: Counts = {
            f"artifacts_{name}": sum(n for (_, t, _), n in mine.items() if t == f"artifact_{name}")
            for name in ("received", "completed", "failed")
        }
        for stage in stages:
            counts[stage] = {
                name: sum(n for (_, t, s), n in mine.items() if s == stage and t == f"stage_{name}")
                for name in ("started", "completed", "failed")
            }
        scopes[organization] = counts
    return scopes


# -- ceiling 1: bare confluent-kafka ------------------------------------------------------


def confluent_ceiling(bootstrap: str, form: Form, timeout_s: float, stack: Stack) -> Result:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-confluent-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    remaining = {p: end for p, end in form.ends.items() if end > 0}
    consumer.assign([TopicPartition(form.topic, p, 0) for p in remaining])
    events = messages = 0
    first = first_cpu = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while remaining:
            if time.monotonic() > deadline:
                raise BenchError(f"confluent ceiling: not done in {timeout_s}s ({remaining})")
            batch = consumer.consume(1000, timeout=1.0)
            if batch and not messages:
                first, first_cpu = time.perf_counter(), time.process_time()
                before = CpuSnapshot.take(None, *stack)
            for message in batch:
                value, offset = message.value(), message.offset()
                if message.error() is not None or value is None or offset is None:
                    continue
                decoded = orjson.loads(value)
                events += len(decoded) if isinstance(decoded, list) else 1
                messages += 1
                partition = message.partition()
                if partition in remaining and offset + 1 >= remaining[partition]:
                    del remaining[partition]
        seconds = time.perf_counter() - first
        cpu = time.process_time() - first_cpu
        cores = CpuSnapshot.take(None, *stack).cores_since(before, seconds)
    finally:
        consumer.close()
    return Result(form.name, "confluent", events, messages, seconds, cpu, extra={"cores": cores})


# -- ceiling 2: bare Faust ----------------------------------------------------------------


def faust_ceiling(
    bootstrap: str,
    form: Form,
    workdir: Path,
    mode: str,
    take: tuple[int, float],
    timeout_s: float,
    stack: Stack,
) -> Result:
    run = f"faust-{form.name}-{mode}-{uuid.uuid4().hex[:6]}"
    result_file = workdir / f"{run}.json"
    env = {
        **os.environ,
        "BENCH_KAFKA_BOOTSTRAP": bootstrap,
        "BENCH_TOPIC": form.topic,
        "BENCH_GROUP": f"bench-faust-{uuid.uuid4().hex[:8]}",
        "BENCH_EXPECT_EVENTS": str(form.events),
        "BENCH_RESULT": str(result_file),
        "BENCH_FAUST_MODE": mode,
        "BENCH_PARTITIONS": str(len(form.ends)),
        "BENCH_TAKE_MAX": str(take[0]),
        "BENCH_TAKE_WITHIN": str(take[1]),
        "BENCH_DATADIR": str(workdir / run),
    }
    log_path = workdir / f"{run}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.perf.faust_bare"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started_file = result_file.with_suffix(".started")
    before: tuple[float, CpuSnapshot] | None = None
    try:
        deadline = time.monotonic() + timeout_s
        while not result_file.exists():
            if before is None and started_file.exists():
                before = time.perf_counter(), CpuSnapshot.take(process.pid, *stack)
            if process.poll() is not None:
                raise BenchError(f"bare Faust exited with {process.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"bare Faust: not done in {timeout_s}s: {_tail(log_path)}")
            time.sleep(0.05)
        cores = None
        if before is not None:
            seconds = time.perf_counter() - before[0]
            cores = CpuSnapshot.take(process.pid, *stack).cores_since(before[1], seconds)
    finally:
        _stop(process)
    data = orjson.loads(result_file.read_bytes())
    return Result(
        form.name,
        "faust" if mode == "take" else f"faust ({mode})",
        int(data["events"]),
        int(data["messages"]),
        float(data["seconds"]),
        float(data["cpu_seconds"]),
        data["peak_rss_kb"],
        {"mode": mode, "cores": cores},
    )


# -- the worker ---------------------------------------------------------------------------

_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics, each metric summed over its labels; empty if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if match and match.group(1).startswith("voicemon_"):
            totals[match.group(1)] += float(match.group(3))
    return dict(totals)


@dataclass(slots=True)
class WorkerRun:
    """Everything observed while one worker consumed one form."""

    launched: float
    assigned: float | None = None
    first_commit: float | None = None
    all_rows: float | None = None
    done: float | None = None
    cpu_at_assign: CpuSnapshot | None = None
    cpu_at_done: CpuSnapshot | None = None
    rss_samples_kb: list[int] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = Settings()
        self.bootstrap: str = self.settings.kafka_bootstrap
        self.suffix = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"voicemon-bench-{self.suffix}-"))
        self.dlq_topic = f"bench-{self.suffix}.events.dlq"
        self.snapshots_topic = f"bench-{self.suffix}.snapshots"
        self.topics: list[str] = [self.dlq_topic, self.snapshots_topic]
        base = self.settings.redis_url.get_secret_value().rsplit("/", 1)[0]
        self.redis_url = f"{base}/{args.redis_db}"
        self.redis = Redis.from_url(self.redis_url)
        self.worker_runs = 0
        self.peer_runs = 0
        self.peer_python: Path | None = None
        self.topologies: dict[str, RedisTopology] = {}  # what the worker runs against
        self.exits = ExitStack()  # the cluster the benchmark starts
        self.claimed = False  # the DB is flushed at the end only once claimed

    def start_topologies(self, redis_pids: Sequence[int]) -> None:
        """The single primary (this benchmark's DB of the stack's redis-server) and/or a
        three-primary cluster with the same persistence settings, started here."""
        try:
            for name in self.args.redis:
                if name == "single":
                    topology = single(self.redis_url, redis_pids)
                else:
                    workdir = self.workdir / "cluster"
                    topology = self.exits.enter_context(start_cluster(workdir, self.redis))
                self.topologies[name] = topology
                print(f"redis {name}: {topology.shards} primary(ies), {topology.persistence},"
                      f" {topology.url}", file=sys.stderr)  # fmt: skip
        except TopologyError as error:
            raise BenchError(str(error)) from error

    def flush_topology(self, topology: RedisTopology) -> None:
        if topology.cluster:
            flush_cluster(topology)
        else:
            self.flush_redis()

    # -- setup ----------------------------------------------------------------------------
    def claim_redis_db(self) -> None:
        claim_redis_db(self.redis, self.args.redis_db, BENCH_MARKER, "tests.perf.ingest")
        self.claimed = True

    def flush_redis(self) -> None:
        self.redis.flushdb()
        self.redis.set(BENCH_MARKER, "tests.perf.ingest")

    def publish_forms(self) -> list[Form]:
        wanted = [("single", 1, self.args.single_events), ("batch", self.args.batch_size, 0)]
        forms = []
        for index, (name, batch_size, events) in enumerate(wanted):
            if name not in self.args.forms:
                continue
            events = events or self.args.events
            topic = f"bench-{self.suffix}.{name}"
            create_topics(self.bootstrap, [topic], self.args.partitions)
            self.topics.append(topic)
            started, first_ms = time.perf_counter(), int(time.time() * 1000)
            tally: Counter[Kind] = Counter()
            ends = publish(
                self.bootstrap,
                topic,
                events=events,
                batch_size=batch_size,
                seed=self.args.seed + index,
                stages=self.settings.stages,
                tally=tally,
            )
            expected = expected_counts(tally, self.settings.stages)
            form = Form(name, topic, events, ends, first_ms, expected)
            took = time.perf_counter() - started
            print(
                f"published {name}: {events:,} events in {form.messages:,} messages",
                f"({took:.1f} s)",
                file=sys.stderr,
            )
            forms.append(form)
        create_topics(self.bootstrap, [self.dlq_topic, self.snapshots_topic],
                      self.args.partitions, forms[0].topic if forms else None)  # fmt: skip
        return forms

    def redis_usec(self) -> dict[str, int]:
        """Server-side microseconds per command so far (all clients of this Redis server)."""
        stats = self.redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(row["usec"]) for name, row in stats.items()}

    # -- worker ---------------------------------------------------------------------------
    def worker_env(
        self, form: Form, run_dir: Path, port: int, extra: dict[str, str], redis: RedisTopology
    ) -> dict[str, str]:
        return {
            **os.environ,
            "VOICEMON_KAFKA_BOOTSTRAP": self.bootstrap,
            **redis.env(),
            "VOICEMON_CLICKHOUSE_DSN": f"chdb://{run_dir / 'clickhouse'}",
            "VOICEMON_EVENTS_TOPIC": form.topic,
            "VOICEMON_DLQ_TOPIC": self.dlq_topic,
            "VOICEMON_SNAPSHOTS_TOPIC": self.snapshots_topic,
            "VOICEMON_ORGANIZATIONS_TOPIC": f"bench-{self.suffix}.organizations",
            "VOICEMON_CONSUMER_GROUP": f"bench-{self.suffix}-worker-{self.worker_runs}",
            "VOICEMON_TOPIC_PARTITIONS": str(len(form.ends)),
            "VOICEMON_WORKER_DATA_DIR": str(run_dir / "faust"),
            "VOICEMON_WORKER_WEB_PORT": str(port),
            **({} if self.args.closer else {"VOICEMON_CLOSER_ENABLED": "false"}),
            **extra,
        }

    def run_worker(
        self,
        form: Form,
        extra: dict[str, str],
        redis: RedisTopology,
        profile: Path | None = None,
    ) -> Result:
        self.worker_runs += 1
        run_dir = self.workdir / f"worker-{self.worker_runs}-{form.name}"
        run_dir.mkdir()
        self.flush_topology(redis)
        port = free_port()
        env = self.worker_env(form, run_dir, port, extra, redis)
        role = env.get("VOICEMON_WORKER_ROLE", "all")
        group = env["VOICEMON_CONSUMER_GROUP"] + ("-store" if role == "store" else "")
        log_path = run_dir / "worker.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "runtime", "worker"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        spy: subprocess.Popen[bytes] | None = None
        run = WorkerRun(launched=time.perf_counter())
        redis_before = redis.usec()
        stack = (redis.pids, stack_pids(self.redis_url, self.bootstrap)[1])
        try:
            durable_metric = "voicemon_" + (
                "events_total" if role == "counters" else "clickhouse_rows_written_total"
            )
            spy = self._watch(
                process, form, group, port, run, log_path, profile, durable_metric, stack
            )
            peak = status_kb(process.pid, "VmHWM")
        finally:
            if spy is not None:
                _stop(spy, signal.SIGINT)
            _stop(process)
        assert run.assigned is not None and run.done is not None
        redis_seconds = self._redis_seconds_since(redis_before, redis)
        self._check(form, run, env, role)
        read_p99_ms = self._check_realtime(form, redis) if role != "store" else None
        seconds = run.done - run.assigned
        assert run.cpu_at_assign is not None and run.cpu_at_done is not None
        cores = run.cpu_at_done.cores_since(run.cpu_at_assign, seconds)
        batches = run.metrics.get("voicemon_batch_seconds_count", 0.0)
        extra_out: dict[str, Any] = {
            "env": extra,
            "startup_s": run.assigned - run.launched,
            "first_commit_after_s": (run.first_commit or run.done) - run.assigned,
            "durable_s": (run.all_rows or run.done) - run.assigned,
            "cores": cores,
            "median_rss_kb": sorted(run.rss_samples_kb)[len(run.rss_samples_kb) // 2]
            if run.rss_samples_kb
            else None,
            "batches": int(batches),
            "events_per_batch": form.events / batches if batches else None,
            "batch_seconds_sum": run.metrics.get("voicemon_batch_seconds_sum"),
            "clickhouse_insert_seconds_sum": run.metrics.get(
                "voicemon_clickhouse_insert_seconds_sum"
            ),
            "redis_server_seconds": redis_seconds,
            "redis": redis.name,
            "redis_shards": redis.shards,
            "redis_persistence": redis.persistence,
            "redis_shard_cores": run.cpu_at_done.redis_cores_each(run.cpu_at_assign, seconds),
            "read_p99_ms": read_p99_ms,
            "log": str(log_path),
        }
        label = "worker" + (f" [{_short(extra)}]" if extra else "")
        if profile is not None:
            label += " (profiled)"
        return Result(
            form.name,
            label,
            form.events,
            form.messages,
            seconds,
            run.cpu_at_done.worker - run.cpu_at_assign.worker,
            peak,
            extra_out,
        )

    def _watch(
        self,
        process: subprocess.Popen[bytes],
        form: Form,
        group: str,
        port: int,
        run: WorkerRun,
        log_path: Path,
        profile: Path | None,
        durable_metric: str,
        stack: Stack,
    ) -> subprocess.Popen[bytes] | None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        offsets = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        wanted = [TopicPartition(form.topic, p) for p in form.ends]
        spy: subprocess.Popen[bytes] | None = None
        deadline = time.monotonic() + self.args.timeout
        next_scrape = 0.0
        try:
            while True:
                if process.poll() is not None:
                    raise BenchError(f"worker exited with {process.returncode}: {_tail(log_path)}")
                if time.monotonic() > deadline:
                    raise BenchError(f"worker: not done in {self.args.timeout}s: {_tail(log_path)}")
                if run.assigned is None:
                    if _group_assigned(admin, group, form.topic):
                        run.assigned = time.perf_counter()
                        run.cpu_at_assign = CpuSnapshot.take(process.pid, *stack)
                        if profile is not None:
                            spy = _start_py_spy(process.pid, profile)
                    else:
                        time.sleep(0.1)
                        continue
                try:
                    found = offsets.committed(wanted, timeout=10)
                except KafkaException:  # e.g. coordinator load in progress: ask again
                    time.sleep(0.5)
                    continue
                committed = {tp.partition: tp.offset for tp in found}
                now = time.perf_counter()
                if run.first_commit is None and any(o > 0 for o in committed.values()):
                    run.first_commit = now
                if all(committed.get(p, -1) >= end for p, end in form.ends.items() if end > 0):
                    run.done = now
                    run.cpu_at_done = CpuSnapshot.take(process.pid, *stack)
                    run.metrics = scrape(port)
                    if run.all_rows is None:
                        run.all_rows = now
                    return spy
                if now >= next_scrape:  # a scrape costs the worker CPU: not every poll
                    next_scrape = now + SCRAPE_EVERY_S
                    rows = scrape(port).get(durable_metric, 0.0)
                    if run.all_rows is None and rows >= form.events:
                        run.all_rows = time.perf_counter()
                rss = status_kb(process.pid, "VmRSS")
                if rss is not None:
                    run.rss_samples_kb.append(rss)
                time.sleep(0.1)
        finally:
            offsets.close()

    def _check(self, form: Form, run: WorkerRun, env: dict[str, str], role: str) -> None:
        """Every event counted once and stored once; nothing rejected or called duplicate.
        (A ``counters`` worker only counts, a ``store`` worker only stores.)"""
        if role != "store":
            self._check_counted(form, run)
        if role != "counters" and not self.args.no_verify:
            self._check_stored(form, env)

    def _check_counted(self, form: Form, run: WorkerRun) -> None:
        counted = run.metrics.get("voicemon_events_total", 0.0)
        rejected = run.metrics.get("voicemon_events_rejected_total", 0.0)
        duplicate = run.metrics.get("voicemon_events_duplicate_total", 0.0)
        if (counted, rejected, duplicate) != (form.events, 0, 0):
            raise BenchError(
                f"worker on {form.name}: counted {counted:.0f} of {form.events}, "
                f"rejected {rejected:.0f}, duplicates {duplicate:.0f}"
            )

    def _check_stored(self, form: Form, env: dict[str, str]) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "runtime",
                "sql",
                "SELECT count() AS n FROM voicemon.pipeline_events",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise BenchError(f"row count failed: {done.stderr.decode()[-500:]}")
        rows = int(orjson.loads(done.stdout)[0]["n"])
        if rows != form.events:
            raise BenchError(f"worker on {form.name}: {rows} ClickHouse rows, {form.events} events")

    def _check_realtime(self, form: Form, redis: RedisTopology) -> float:
        """The real-time views of the platform and of every organization count each event
        once, read as the API reads them; then the read p99 (platform, ``--reads`` reads
        after a tenth as many untimed ones), in milliseconds."""
        now_ms = max(int(time.time() * 1000), form.first_ms + 2 * MINUTE_MS)
        if now_ms - form.first_ms > (WINDOW_MINUTES - 2) * MINUTE_MS:
            raise BenchError(
                f"{form.name} was published {(now_ms - form.first_ms) / MINUTE_MS:.0f} min ago: "
                "its first events left the 60-minute real-time window; run fewer paths at once"
            )
        client = redis.client()
        try:
            wrong = []
            for scope, expected in form.expected.items():
                view = read_realtime(client, scope, self.settings.stages, now_ms)
                if realtime_counts(view) != expected:
                    wrong.append(scope or "platform")
            if wrong:
                raise BenchError(
                    f"worker on {form.name}, redis {redis.name}: real-time counts differ from "
                    f"the published events for {len(wrong)} scope(s): {sorted(wrong)[:5]}"
                )
            return read_p99(lambda: read_realtime(client, None, self.settings.stages),
                            self.args.reads)  # fmt: skip
        finally:
            client.close()

    # -- the Quix Streams peer -------------------------------------------------------------
    def prepare_peer(self) -> None:
        try:
            self.peer_python = ensure_peer_venv(self.args.peer_venv)
        except PeerVenvError as error:
            raise BenchError(str(error)) from error

    def run_peer(self, form: Form, dedup: bool, stack: Stack) -> Result:
        """The peer on ``form`` (``--expand`` for batches), a fresh Redis DB and chDB dir,
        timed by itself; CPU from samples of /proc around the interval it reports."""
        assert self.peer_python is not None
        self.peer_runs += 1
        run_dir = self.workdir / f"peer-{self.peer_runs}-{form.name}"
        run_dir.mkdir()
        self.flush_redis()
        command = [str(self.peer_python), str(PEER_SCRIPT), "--bootstrap", self.bootstrap]
        command += ["--topic", form.topic, "--n", str(form.events), "--redis", self.redis_url]
        command += ["--chdb", str(run_dir / "clickhouse")]
        command += ["--expand"] * (form.name == "batch") + ["--dedup"] * dedup
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        log_path = run_dir / "peer.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        redis_before = self.redis_usec()
        try:
            events, took, samples, peak = self._watch_peer(process, log_path, stack)
        finally:
            _stop(process)
        end = samples[-1]
        start = min(samples, key=lambda sample: abs(sample[0] - (end[0] - took)))
        if end[0] - start[0] <= 0:
            raise BenchError(f"peer on {form.name}: too short to sample ({took:.2f} s)")
        cores = end[1].cores_since(start[1], end[0] - start[0])
        return Result(
            form.name,
            "peer" if dedup else "peer (no dedup)",
            events,
            form.messages,
            took,
            cores["worker"] * took,
            peak,
            {
                "dedup": dedup,
                "cores": cores,
                "redis_server_seconds": self._redis_seconds_since(redis_before),
                "redis": "single",
                "log": str(log_path),
            },
        )

    def _watch_peer(
        self, process: subprocess.Popen[bytes], log_path: Path, stack: Stack
    ) -> tuple[int, float, list[tuple[float, CpuSnapshot]], int | None]:
        """Sample the peer's CPU every 50 ms until it prints its rate (then it exits)."""
        samples: list[tuple[float, CpuSnapshot]] = []
        peak = None
        deadline = time.monotonic() + self.args.timeout
        while True:
            match = _PEER_LINE.search(log_path.read_text(errors="replace"))
            if match:
                if not samples:
                    raise BenchError("the peer finished before it could be sampled")
                events, took = int(match.group(1)), float(match.group(2))
                return events, took, samples, peak
            if process.poll() is not None:
                raise BenchError(f"peer exited with {process.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"peer: not done in {self.args.timeout}s: {_tail(log_path)}")
            try:
                samples.append((time.perf_counter(), CpuSnapshot.take(process.pid, *stack)))
                peak = status_kb(process.pid, "VmHWM") or peak
            except OSError:  # it exited between the two checks; the log says why
                pass
            time.sleep(0.05)

    def _redis_seconds_since(
        self, before: dict[str, int], redis: RedisTopology | None = None
    ) -> dict[str, float]:
        """Redis server seconds per command since ``before`` (from ``redis_usec``, or
        ``redis.usec``: summed over a cluster's nodes)."""
        now = self.redis_usec() if redis is None else redis.usec()
        return {
            command: (usec - before.get(command, 0)) / 1e6
            for command, usec in now.items()
            if usec > before.get(command, 0)
        }

    # -- everything -----------------------------------------------------------------------
    def run(self) -> tuple[list[Result], dict[str, dict[str, Any]]]:
        self.claim_redis_db()
        if "peer" in self.args.paths:
            self.prepare_peer()  # before publishing: a failed install fails fast
        forms = self.publish_forms()
        results: list[Result] = []
        take = (self.args.take_max, self.args.take_within)
        timeout: float = self.args.timeout
        stack = stack_pids(self.redis_url, self.bootstrap)
        self.start_topologies(stack[0])
        for form in forms:
            for _ in range(self.args.repeat):
                if "confluent" in self.args.paths:
                    results.append(confluent_ceiling(self.bootstrap, form, timeout, stack))
                    _progress(results[-1])
                for mode in self.args.faust_modes if "faust" in self.args.paths else []:
                    workdir = self.workdir
                    results.append(
                        faust_ceiling(self.bootstrap, form, workdir, mode, take, timeout, stack)
                    )
                    _progress(results[-1])
                for dedup in self._peer_runs(form):
                    results.append(self.run_peer(form, dedup, stack))
                    _progress(results[-1])
                for variant in self.args.variants if "worker" in self.args.paths else []:
                    for topology in self.topologies.values():
                        results.append(self.run_worker(form, variant, topology))
                        _progress(results[-1])
        profiles: dict[str, dict[str, Any]] = {}
        if self.args.profile is not None:
            self.args.profile.mkdir(parents=True, exist_ok=True)
            for form in forms:
                raw = self.args.profile / f"worker-{form.name}.pyspy.txt"
                first = self.topologies[self.args.redis[0]]
                results.append(self.run_worker(form, self.args.variants[-1], first, raw))
                _progress(results[-1])
                profiles[form.name] = summarize_profile(raw)
        return results, profiles

    def _peer_runs(self, form: Form) -> list[bool]:
        """Whether each peer run on ``form`` dedups: always one with dedup (the one the
        worker is compared with), and one without on the forms of ``--peer-no-dedup``."""
        if "peer" not in self.args.paths:
            return []
        return [True] + [False] * (form.name in self.args.peer_no_dedup)

    def cleanup(self) -> None:
        self.exits.close()  # the cluster's nodes stop (its files stay with --keep)
        if self.args.keep:
            print(f"kept {self.workdir} and topics {self.topics}", file=sys.stderr)
            return
        delete_topics(self.bootstrap, self.topics)
        if self.claimed:
            self.redis.flushdb()
        shutil.rmtree(self.workdir, ignore_errors=True)


_PEER_LINE = re.compile(r"quix peer: (\d+) events in ([0-9.]+)s = [0-9,]+ events/s")


def _group_assigned(admin: AdminClient, group: str, topic: str) -> bool:
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=5)
    except Exception:
        return False
    for member in description.members:
        assignment = member.assignment
        if assignment and any(tp.topic == topic for tp in assignment.topic_partitions):
            return True
    return False


def _start_py_spy(pid: int, raw: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    command = [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
    command += ["--threads", "--idle", "--nonblocking", "-o", str(raw)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _short(env: dict[str, str]) -> str:
    return ",".join(f"{k.removeprefix('VOICEMON_BATCH_')}={v}" for k, v in env.items())


def _progress(result: Result) -> None:
    redis = result.extra.get("redis") or "-"
    print(
        f"  {result.form:<6} {result.path:<40} {redis:<8} {result.events_per_s:>12,.0f} events/s",
        file=sys.stderr,
    )


# -- profile summary ----------------------------------------------------------------------

# (category, pattern in the stack): the first match wins, so specific ones come first.
_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("ClickHouse insert (chDB, in a thread)", "write (consumers/raw_writer.py"),
    ("ClickHouse replay check", "_missing_rows (consumers/ingest.py"),
    ("validate: pydantic model_validate", "model_validate (pydantic/"),
    ("validate: rules, timestamps, PipelineEvent", "check_rules (voicemon/event.py"),
    ("validate: other (required fields, types)", "validate_event (voicemon/event.py"),
    ("decode: msgspec fast path", "_decode_fast (consumers/decode.py"),
    ("decode: orjson + AcceptedEvent/RawRow objects", "_decode (consumers/ingest.py"),
    ("Redis: seen-marker lookup script + reply decode", "owners (consumers/rolling_counters.py"),
    ("Redis: claim script args + call", "claim (consumers/rolling_counters.py"),
    ("Redis: counter increments script args + call", "add (consumers/rolling_counters.py"),
    ("rolling increments (Python)", "increments (voicemon/rolling.py"),
    ("seen-marker keys, classify", "_count_once (consumers/ingest.py"),
    ("Prometheus observe", "_observe (consumers/ingest.py"),
    ("window bookkeeping (written_windows)", "written_windows (consumers/batch.py"),
    ("ingest: other", "process (consumers/ingest.py"),
    ("agent: Message objects, acks", "push (consumers/ingest_agent.py"),
    ("window closer / snapshots", "aggregators/"),
    ("/metrics endpoint (scraped by the bench)", "generate_latest"),
    ("redis client (other)", "redis/"),
)
_IDLE_LEAVES = ("select (selectors.py", "wait (threading.py", "_worker (concurrent/futures")
_FAUST = ("faust/", "mode/", "aiokafka/")


def _category(frames: str) -> str:
    leaf = frames.rsplit(";", 1)[-1]
    for name, pattern in _CATEGORIES:
        if pattern in frames:
            return name
    if any(idle in leaf for idle in _IDLE_LEAVES) or "get (queue.py" in leaf:
        return "idle (waiting: Redis, chDB thread, Faust)"
    if any(part in frames for part in _FAUST):
        return "Faust / aiokafka / mode"
    if "asyncio/" in frames:
        return "asyncio (other)"
    return "other"


def _thread_kind(name: str) -> str:
    if name == "MainThread":
        return "main thread (event loop: agent, ingest)"
    if name.startswith("asyncio_"):
        return "to_thread pool (chDB insert, replay check)"
    if name.startswith("Thread-"):
        return "Faust consumer thread (aiokafka fetcher)"
    return "other threads"


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Share of samples per thread kind and category, from py-spy's raw (collapsed) output.

    Sampled with ``--idle``, so shares are of wall time; a thread waiting (event loop in
    ``select``, a pool thread waiting for work) counts as idle."""
    if not raw.exists():
        raise BenchError(f"py-spy wrote no profile to {raw}")
    per_thread: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    threads: dict[str, set[str]] = defaultdict(set)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        head, _, frames = stack.partition(";")
        if not frames or not count.isdigit():
            continue
        thread_id, _, name = head.partition(": ")
        kind = _thread_kind(name)
        threads[kind].add(thread_id)
        per_thread[kind][_category(frames)] += int(count)
    summary: dict[str, Any] = {"raw": str(raw), "threads": {}}
    for kind, categories in per_thread.items():
        total = sum(categories.values())
        ranked = sorted(categories.items(), key=lambda item: -item[1])
        summary["threads"][kind] = {
            "threads": len(threads[kind]),
            "samples": total,
            "share": {name: count / total for name, count in ranked},
        }
    return summary


# -- output -------------------------------------------------------------------------------


Ratios = dict[str, float | None]  # to each reference path: confluent, faust, peer
REFERENCES = ("confluent", "faust", "peer")  # "peer": the Quix peer WITH dedup


def _ratios(results: Sequence[Result]) -> Iterator[tuple[Result, Ratios]]:
    """Each result with its ratios to the form's references (the best run of each)."""
    best: dict[tuple[str, str], float] = {}
    for result in results:
        if result.path in REFERENCES:
            key = (result.form, result.path)
            best[key] = max(best.get(key, 0.0), result.events_per_s)
    for result in results:
        ratios: Ratios = {}
        for reference in REFERENCES:
            rate = best.get((result.form, reference))
            ratios[reference] = result.events_per_s / rate if rate else None
        yield result, ratios


def table(results: Sequence[Result]) -> str:
    """One line per measured run. ``x conf``, ``x faust``, ``x peer``: events/s over the
    form's bare confluent-kafka, bare Faust and Quix peer WITH dedup runs. ``CPU``: cores the
    path's own process used; ``redis``: cores redis-server used; ``other``: cores used by
    processes that are neither the path, the stack nor this benchmark (another job on the
    machine: the figures are then noisy). ``CPU us/ev`` and ``redis us/ev``: the same CPU
    per event, in microseconds (the path's process, then redis-server)."""
    header = (
        f"{'form':<6} {'path':<34} {'topology':<8} {'events/s':>10} {'msgs/s':>9}"
        f" {'x conf':>6} {'x faust':>7}"
        f" {'x peer':>6} {'seconds':>7} {'durable':>7} {'CPU':>4} {'redis':>5} {'other':>5}"
        f" {'CPU us/ev':>9} {'redis us/ev':>11} {'peak RSS':>9}"
    )
    lines = [header, "-" * len(header)]
    for result, ratios in _ratios(results):
        cores = result.extra.get("cores") or {}
        if result.seconds < 3:  # CPU accounting ticks are 10 ms: too coarse for short runs
            cores = {name: value for name, value in cores.items() if name != "other"}
        rss = f"{result.peak_rss_kb / 1024:,.0f} MiB" if result.peak_rss_kb else "-"
        lines.append(
            f"{result.form:<6} {result.path:<34} {result.extra.get('redis') or '-':<8}"
            f" {result.events_per_s:>10,.0f}"
            f" {result.messages_per_s:>9,.0f} {_fmt(ratios['confluent']):>6}"
            f" {_fmt(ratios['faust']):>7} {_fmt(ratios['peer']):>6}"
            f" {result.seconds:>7.1f} {_fmt(result.extra.get('durable_s'), '.1f'):>7}"
            f" {_fmt(result.cores, '.2f'):>4} {_fmt(cores.get('redis'), '.2f'):>5}"
            f" {_fmt(cores.get('other'), '.2f'):>5} {_fmt(result.cpu_us_per_event, '.1f'):>9}"
            f" {_fmt(result.redis_us_per_event, '.1f'):>11} {rss:>9}"
        )
    return "\n".join(lines)


def topology_table(results: Sequence[Result]) -> str:
    """The worker's runs side by side per Redis topology: events/s, Redis CPU per event in
    microseconds (all shards, then each shard: one redis-server process each) and the
    real-time read p99 measured after the run (platform scope, as the API reads it)."""
    header = (
        f"{'form':<6} {'path':<34} {'topology':<8} {'shards':>6} {'persistence':<24}"
        f" {'events/s':>10} {'redis us/ev':>11} {'per shard us/ev':<20} {'read p99 ms':>11}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        if not result.path.startswith("worker"):
            continue
        each = "/".join(f"{value:.2f}" for value in result.redis_us_per_event_each) or "-"
        lines.append(
            f"{result.form:<6} {result.path:<34} {result.extra.get('redis', '-'):<8}"
            f" {result.extra.get('redis_shards', 0):>6}"
            f" {result.extra.get('redis_persistence', '-'):<24} {result.events_per_s:>10,.0f}"
            f" {_fmt(result.redis_us_per_event, '.2f'):>11} {each:<20}"
            f" {_fmt(result.extra.get('read_p99_ms'), '.3f'):>11}"
        )
    return "\n".join(lines)


def profile_table(summary: dict[str, Any]) -> str:
    lines = []
    for thread, data in summary["threads"].items():
        lines.append(f"{thread}: {data['threads']} thread(s), {data['samples']} samples")
        for name, share in data["share"].items():
            if share >= 0.005:
                lines.append(f"  {share:>6.1%}  {name}")
    return "\n".join(lines)


def _revision() -> str:
    """The commit measured, with ``+dirty`` when the work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def as_json(
    args: argparse.Namespace, results: Sequence[Result], profile: dict[str, dict[str, Any]]
) -> bytes:
    rows = []
    for result, ratios in _ratios(results):
        row = asdict(result)
        row |= {
            "events_per_s": result.events_per_s,
            "messages_per_s": result.messages_per_s,
            "ratio_to_confluent": ratios["confluent"],
            "ratio_to_faust": ratios["faust"],
            "ratio_to_peer": ratios["peer"],
            "cores": result.cores,
            "cpu_us_per_event": result.cpu_us_per_event,
            "redis_cpu_us_per_event": result.redis_us_per_event,
            "redis_cpu_us_per_event_per_shard": result.redis_us_per_event_each,
        }
        rows.append(row)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    document = {
        "command": " ".join(["python", "-m", "tests.perf.ingest", *sys.argv[1:]]),
        "revision": _revision(),
        "options": options,
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "results": rows,
        "profile": profile,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


# -- command line -------------------------------------------------------------------------


def _variant(spec: str) -> dict[str, str]:
    env = {}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.startswith("VOICEMON_"):
            raise argparse.ArgumentTypeError(f"expected VOICEMON_NAME=VALUE, got {part!r}")
        env[key] = value
    return env


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.ingest", description=__doc__.split("\n")[0] if __doc__ else ""
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events, batch form")
    parser.add_argument("--batch-size", type=int, default=500, help="events per batch message")
    parser.add_argument(
        "--single-events", type=int, default=150_000, help="events (= messages), single form"
    )
    parser.add_argument("--forms", type=_csv, default=["single", "batch"])
    parser.add_argument(
        "--paths", type=_csv, default=["confluent", "faust", "peer", "worker"], help="%(default)s"
    )
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=ROOT / "var" / "bench" / "quix-venv",
        help="the Quix peer's virtual environment, created here once (default %(default)s)",
    )
    parser.add_argument(
        "--peer-no-dedup",
        type=_csv,
        default=["single"],
        help="forms that also get a peer run without dedup, as a reference (%(default)s)",
    )
    parser.add_argument(
        "--faust-modes",
        type=_csv,
        default=["take"],
        help="take (noack_take like the worker) and/or iter (plain async for)",
    )
    parser.add_argument("--take-max", type=int, default=2000, help="bare Faust noack_take max")
    parser.add_argument("--take-within", type=float, default=1.0, help="bare Faust within (s)")
    parser.add_argument(
        "--variant",
        dest="variants",
        type=_variant,
        action="append",
        help="extra worker run with these env vars, e.g. VOICEMON_BATCH_MAX_MESSAGES=50 "
        "(repeatable; without it one run with the worker's defaults)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure every path this many times")
    parser.add_argument(
        "--redis",
        type=_csv,
        default=["single"],
        help="Redis the worker runs against, one run each: single (the stack's primary) "
        "and/or cluster (three primaries started here) (default %(default)s)",
    )
    parser.add_argument(
        "--reads", type=int, default=1000, help="timed real-time reads after each worker run"
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-db", type=int, default=15, help="owned and flushed by the bench")
    parser.add_argument("--timeout", type=float, default=600.0, help="per measured path (s)")
    parser.add_argument("--profile", type=Path, help="also profile the worker (py-spy) into DIR")
    parser.add_argument("--no-verify", action="store_true", help="skip the ClickHouse row count")
    parser.add_argument("--keep", action="store_true", help="keep topics, Redis DB and files")
    parser.add_argument(
        "--closer",
        action="store_true",
        help="leave the worker's window closer on (off by default: on a fresh Redis DB it "
        "first catches up 48 hours of empty windows, which is not ingest work)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    args.variants = args.variants or [{}]
    unknown = sorted(set(args.redis) - set(TOPOLOGIES)) or ([] if args.redis else ["(none)"])
    if unknown:
        parser.error(f"--redis takes {','.join(TOPOLOGIES)}, not {','.join(unknown)}")
    if args.reads < 1:
        parser.error("--reads must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        results, profile = bench.run()
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
    if args.json:
        sys.stdout.buffer.write(as_json(args, results, profile) + b"\n")
    else:
        print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        print(table(results))
        if any(result.path.startswith("worker") for result in results):
            print("\nworker per Redis topology (Redis CPU per event, all shards and each):")
            print(topology_table(results))
        for form, summary in profile.items():
            print(f"\nworker profile, {form} form (py-spy, {summary['raw']}):")
            print(profile_table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
