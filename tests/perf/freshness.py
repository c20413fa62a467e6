"""Freshness under load: how soon an event a producer has sent shows in the real-time read.

    python -m tests.perf.freshness --rate 10000 --form batch --seconds 60
    python -m tests.perf.freshness --rate 5000 --form single --seconds 60
        [--warmup 5] [--probe-every-ms 50] [--poll-ms 10] [--worker-env VOICEMON_X=Y ...]
        [--redis-db 12] [--closer] [--keep] [--json]

Needs the local stack (``voicemon stack up``, or the ports of ``VOICEMON_KAFKA_BOOTSTRAP`` and
``VOICEMON_REDIS_URL``). The benchmark owns Redis DB ``--redis-db``: it flushes it at start
and at the end, and refuses a DB holding keys it did not write.

What runs:

1. A real worker, ``python -m runtime worker``, on a fresh events topic (``--partitions``),
   with its own consumer group, Redis DB, chDB directory and DLQ/snapshot topics, the
   worker's default settings plus ``--worker-env`` (the window closer off unless
   ``--closer``, as in ``tests.perf.ingest``). Timing starts once its group is assigned the
   partitions and one warm-up event has become visible (start-up is not freshness).
2. A load generator, in its own process: ``voicemon.producer.EventProducer`` publishing
   ``voicemon.devtools.loadgen.LoadMix`` traffic (valid, unique events of 100
   organizations) at ``--rate`` events per second for ``--warmup`` + ``--seconds`` seconds.
   Form ``batch``: the producer's own batching (up to ``--batch-size`` events a message,
   ``--linger-ms`` linger); form ``single``: one event per message.
3. Probes: every ``--probe-every-ms`` the generator publishes one probe through the same
   producer, then calls ``flush()``. A probe is a normal valid ``artifact_received`` event
   (occurred now), counted and stored like any other and included in the rate, whose
   ``organization_id`` is its own (``probe-<run>-<n>``), so that the organization's
   real-time view counts exactly that one event.
4. A watcher thread in this process (not the generator's, so that reading never delays
   publishing) reads each pending probe's organization with
   ``aggregators.query.realtime.read_realtime`` - the read behind ``GET /v1/metrics/realtime`` and
   ``voicemon metrics realtime`` - once a round, a round every ``--poll-ms``, until the
   view's ``artifacts_received`` is 1. Reads are capped at ``--max-reads-per-s`` (each costs
   ~0.25 ms of CPU; uncapped, a watcher of many pending probes would starve the worker it
   measures): with more pending probes than that allows, rounds stretch, and the report
   gives the mean and longest round.

**Freshness** of a probe = the moment that read returned - the moment ``flush()`` returned.
So it is what a producer would see: after ``flush()`` has returned (Kafka acknowledged the
event), how long until a real-time reader sees it. It includes the worker's fetch, batching
and Redis write; it is an upper bound, by at most one round plus one read. Reported:
p50/p90/p99/max over the probes of the measured ``--seconds`` (the warm-up's probes must be
seen too but are not in the figures), the rate the generator achieved in that period, and
the events/s the worker counted meanwhile (below the rate: it fell behind), and the CPU
used meanwhile by the worker and by redis-server (cores, and microseconds per event the
worker counted; Redis's includes the probe reads), Kafka, the generator, this watcher and
everything else (``other``: above ~0.2 another job was competing). The issue's target is
p99 <= 1 s at 10,000 events/s batched and 5,000 events/s single.

It fails (exit 1, a sentence on stderr after the figures) if the generator fell short of
``--rate`` by more than ``--rate-tolerance``, or if a probe was not visible within
``--probe-timeout`` seconds (counted as never seen in the percentiles); and without figures
if the worker did not count every published event exactly once in the end.
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient
from redis import Redis

from aggregators.query.realtime import read_realtime
from tests.perf.ingest import (
    ROOT,
    BenchError,
    CpuSnapshot,
    _group_assigned,
    _stop,
    _tail,
    claim_redis_db,
    cpu_seconds,
    create_topics,
    delete_topics,
    free_port,
    scrape,
    stack_pids,
)
from voicemon.devtools.loadgen import LoadMix
from voicemon.producer import EventProducer
from voicemon.settings import Settings

MARKER = "vm:bench:freshness"  # the benchmark's claim on its Redis DB
TARGET_P99_S = 1.0


# -- the load generator (a process of its own) --------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadSpec:
    bootstrap: str
    topic: str
    form: str
    rate: float
    seconds: float
    warmup: float
    probe_every_s: float
    batch_size: int
    linger_s: float
    seed: int
    stages: tuple[str, ...]
    run_id: str


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe event whose ``flush()`` returned at ``flushed`` (``time.monotonic()``)."""

    number: int
    organization_id: str
    flushed: float
    measured: bool  # False during the warm-up


@dataclass(frozen=True, slots=True)
class Published:
    """What the generator sent: everything, and the measured period alone."""

    events: int
    probes: int
    measured_events: int
    measured_seconds: float
    cpu_seconds: float

    @property
    def measured_rate(self) -> float:
        return self.measured_events / self.measured_seconds if self.measured_seconds else 0.0


def probe_event(run_id: str, tag: str, now_ms: int) -> dict[str, Any]:
    """A normal valid event, alone in its organization ``probe-<run_id>-<tag>``."""
    name = f"probe-{run_id}-{tag}"
    return {
        "event_id": name,
        "event_type": "artifact_received",
        "occurred_at": now_ms,
        "artifact_id": name,
        "organization_id": name,
    }


def generate(spec: LoadSpec, out: multiprocessing.Queue[Any]) -> None:
    """Publish at ``spec.rate`` with a probe every ``spec.probe_every_s``; report to ``out``:
    ``("measuring", None)`` when the warm-up ends, each ``Probe``, ``("done", Published)``."""
    producer = EventProducer(
        spec.bootstrap,
        spec.topic,
        max_events=spec.batch_size,
        linger_s=spec.linger_s,
        batch=spec.form == "batch",
    )
    mix = LoadMix(seed=spec.seed, organizations=100, stages=spec.stages)
    stream = mix.stream(int(time.time() * 1000) for _ in itertools.count())
    started = time.monotonic()
    measuring_from = started + spec.warmup
    ends = measuring_from + spec.seconds
    next_probe, events, probes, measured_before = started, 0, 0, None
    while (now := time.monotonic()) < ends:
        if measured_before is None and now >= measuring_from:
            measured_before = events
            out.put(("measuring", None))
        if now >= next_probe:
            body = probe_event(spec.run_id, f"{probes:06d}", int(time.time() * 1000))
            producer.publish(body)
            producer.flush()
            out.put(Probe(probes, body["organization_id"], time.monotonic(), now >= measuring_from))
            events, probes = events + 1, probes + 1
            next_probe += spec.probe_every_s
            continue
        event = next(stream)
        assert isinstance(event, dict)  # no malformed share configured
        producer.publish(event)
        events += 1
        ahead = events / spec.rate - (time.monotonic() - started)
        if ahead > 0.0005:
            time.sleep(max(0.0, min(ahead, next_probe - time.monotonic())))
    measured_seconds = time.monotonic() - measuring_from
    producer.flush(timeout_s=60)
    measured = events - (measured_before or 0)
    out.put(("done", Published(events, probes, measured, measured_seconds, time.process_time())))


# -- watching the probes -----------------------------------------------------------------


class Watcher(threading.Thread):
    """Reads every pending probe's organization with ``read_realtime`` once a round, until
    its event is counted (or ``timeout_s`` after its flush). A round starts every ``poll_s``,
    or less often when the reads of a round would exceed ``max_reads_per_s`` (so that the
    watcher never takes more than ~0.1-0.2 of a core from the worker it measures, however
    far behind the worker falls); the mean and longest round say how fine the figures are."""

    def __init__(
        self,
        redis: Redis,
        stages: Sequence[str],
        poll_s: float,
        max_reads_per_s: float,
        timeout_s: float,
    ) -> None:
        super().__init__(name="freshness-watcher", daemon=True)
        self.redis, self.stages, self.timeout_s = redis, stages, timeout_s
        self.poll_s, self.max_reads_per_s = poll_s, max_reads_per_s
        self.inbox: queue.SimpleQueue[Probe] = queue.SimpleQueue()
        self.closing = threading.Event()
        self.freshness: dict[int, float] = {}  # probe number -> seconds
        self.lost: list[int] = []
        self.error: str | None = None
        self.reads = 0
        self.read_seconds = 0.0
        self.rounds: list[float] = []  # how long each round with pending probes lasted

    def run(self) -> None:
        pending: dict[int, Probe] = {}
        try:
            while True:
                started = time.monotonic()
                while not self.inbox.empty():
                    probe = self.inbox.get()
                    pending[probe.number] = probe
                if not pending and self.closing.is_set():
                    return
                reads = len(pending)
                for number, probe in list(pending.items()):
                    if self.visible(probe):
                        del pending[number]
                    elif time.monotonic() - probe.flushed > self.timeout_s:
                        self.lost.append(number)
                        del pending[number]
                took = time.monotonic() - started
                pause = max(self.poll_s, reads / self.max_reads_per_s)
                time.sleep(max(0.0, pause - took))
                if pending:
                    self.rounds.append(time.monotonic() - started)
        except Exception as error:  # a failed read must fail the run, not vanish in a thread
            self.error = str(error) or type(error).__name__

    def visible(self, probe: Probe) -> bool:
        began = time.monotonic()
        view = read_realtime(self.redis, probe.organization_id, self.stages)
        returned = time.monotonic()
        self.reads, self.read_seconds = self.reads + 1, self.read_seconds + returned - began
        if view["artifacts_received"] < 1:
            return False
        self.freshness[probe.number] = returned - probe.flushed
        return True


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.perf_counter()
    cpu: CpuSnapshot
    generator_cpu: float
    counted: float  # voicemon_events_total


@dataclass(slots=True)
class Outcome:
    form: str
    rate_asked: float
    seconds: float
    published: Published
    probes_measured: int
    freshness_ms: dict[str, float]
    cores: dict[str, float]
    worker_events_per_s: float  # counted by the worker in the measured period
    worker_cpu_us_per_event: float
    redis_cpu_us_per_event: float
    read_ms_mean: float
    round_ms_mean: float
    round_ms_max: float
    counted: int
    worker_settings: dict[str, str]
    failures: list[str]  # why the run does not count, if it does not
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = Settings()
        self.bootstrap: str = self.settings.kafka_bootstrap
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = Path(tempfile.mkdtemp(prefix=f"voicemon-fresh-{self.run_id}-"))
        self.prefix = f"fresh-{self.run_id}"
        self.topic = f"{self.prefix}.events"
        self.topics = [self.topic, f"{self.prefix}.events.dlq", f"{self.prefix}.snapshots"]
        base = self.settings.redis_url.get_secret_value().rsplit("/", 1)[0]
        self.redis_url = f"{base}/{args.redis_db}"
        self.redis = Redis.from_url(self.redis_url)
        self.stages = tuple(self.settings.stages)

    def claim_redis_db(self) -> None:
        claim_redis_db(self.redis, self.args.redis_db, MARKER, "tests.perf.freshness")

    def worker_env(self, port: int) -> dict[str, str]:
        return {
            **os.environ,
            "VOICEMON_KAFKA_BOOTSTRAP": self.bootstrap,
            "VOICEMON_REDIS_URL": self.redis_url,
            "VOICEMON_CLICKHOUSE_DSN": f"chdb://{self.workdir / 'clickhouse'}",
            "VOICEMON_EVENTS_TOPIC": self.topic,
            "VOICEMON_DLQ_TOPIC": f"{self.prefix}.events.dlq",
            "VOICEMON_SNAPSHOTS_TOPIC": f"{self.prefix}.snapshots",
            "VOICEMON_ORGANIZATIONS_TOPIC": f"{self.prefix}.organizations",
            "VOICEMON_CONSUMER_GROUP": f"{self.prefix}-worker",
            "VOICEMON_TOPIC_PARTITIONS": str(self.args.partitions),
            "VOICEMON_WORKER_DATA_DIR": str(self.workdir / "faust"),
            "VOICEMON_WORKER_WEB_PORT": str(port),
            **({} if self.args.closer else {"VOICEMON_CLOSER_ENABLED": "false"}),
            **self.args.worker_env,
        }

    def run(self) -> Outcome:
        self.claim_redis_db()
        create_topics(self.bootstrap, self.topics, self.args.partitions)
        port = free_port()
        env = self.worker_env(port)
        log_path = self.workdir / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "runtime", "worker"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.wait_ready(worker, env["VOICEMON_CONSUMER_GROUP"], log_path)
            return self.measure(worker, port, log_path)
        finally:
            _stop(worker)

    def wait_ready(self, worker: subprocess.Popen[bytes], group: str, log_path: Path) -> None:
        """Until the worker's group holds the partitions and a warm-up event is visible."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + self.args.startup_timeout
        progress("waiting for the worker to be assigned the partitions")
        while not _group_assigned(admin, group, self.topic):
            self.check_alive(worker, log_path, deadline, "to be assigned")
            time.sleep(0.1)
        producer = EventProducer(self.bootstrap, self.topic, batch=False)
        warmup = probe_event(self.run_id, "warmup", int(time.time() * 1000))
        producer.publish(warmup)
        producer.flush()
        progress("assigned; waiting for a warm-up event to be visible")
        while (
            read_realtime(self.redis, warmup["organization_id"], self.stages)["artifacts_received"]
            < 1
        ):
            self.check_alive(worker, log_path, deadline, "to count a warm-up event")
            time.sleep(0.05)

    def check_alive(
        self, worker: subprocess.Popen[bytes], log_path: Path, deadline: float, what: str
    ) -> None:
        if worker.poll() is not None:
            raise BenchError(f"the worker exited with {worker.returncode}: {_tail(log_path)}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"the worker took over {self.args.startup_timeout:.0f} s {what}: {_tail(log_path)}"
            )

    def measure(self, worker: subprocess.Popen[bytes], port: int, log_path: Path) -> Outcome:
        args = self.args
        spec = LoadSpec(
            self.bootstrap,
            self.topic,
            args.form,
            args.rate,
            args.seconds,
            args.warmup,
            args.probe_every_ms / 1000,
            args.batch_size,
            args.linger_ms / 1000,
            args.seed,
            self.stages,
            self.run_id,
        )
        context = multiprocessing.get_context("spawn")  # no fork of librdkafka's threads
        out: multiprocessing.Queue[Any] = context.Queue()
        generator = context.Process(target=generate, args=(spec, out), daemon=True)
        stack = stack_pids(self.redis_url, self.bootstrap)
        watcher = Watcher(
            self.redis, self.stages, args.poll_ms / 1000, args.max_reads_per_s, args.probe_timeout
        )
        measured: set[int] = set()
        progress(
            f"load: {args.rate:,.0f} events/s, {args.form} form, "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s measured"
        )
        watcher.start()
        generator.start()
        assert generator.pid is not None
        before = after = None
        published: Published | None = None
        deadline = time.monotonic() + args.warmup + args.seconds + args.startup_timeout
        try:
            while published is None:
                try:
                    item = out.get(timeout=1.0)
                except queue.Empty:
                    self.check_alive(worker, log_path, deadline, "to take the load")
                    if not generator.is_alive():
                        raise BenchError(
                            f"the load generator died (exit code {generator.exitcode})"
                        ) from None
                    continue
                if isinstance(item, Probe):
                    if item.measured:
                        measured.add(item.number)
                    watcher.inbox.put(item)
                elif item[0] == "measuring":
                    before = self.snapshot(worker.pid, port, generator.pid, stack)
                elif item[0] == "done":
                    published = item[1]
                    after = self.snapshot(worker.pid, port, generator.pid, stack)
        finally:
            watcher.closing.set()
            watcher.join(timeout=args.probe_timeout + 10)
            generator.join(timeout=30)
            if generator.is_alive():
                generator.kill()
        assert before is not None and after is not None
        counted = self.wait_counted(worker, port, published.events + 1, log_path)
        return self.outcome(published, watcher, measured, before, after, counted)

    def snapshot(self, worker: int, port: int, generator: int, stack: Any) -> Snapshot:
        """Now: CPU so far (stack, worker, generator) and the events the worker counted."""
        counted = scrape(port).get("voicemon_events_total", 0.0)
        return Snapshot(
            time.perf_counter(), CpuSnapshot.take(worker, *stack), cpu_seconds(generator), counted
        )

    def wait_counted(
        self, worker: subprocess.Popen[bytes], port: int, expected: int, log_path: Path
    ) -> int:
        """Until the worker counted every published event (+ the warm-up one), exactly."""
        deadline = time.monotonic() + self.args.drain_timeout
        while True:
            metrics = scrape(port)
            counted = int(metrics.get("voicemon_events_total", 0))
            rejected = int(metrics.get("voicemon_events_rejected_total", 0))
            duplicate = int(metrics.get("voicemon_events_duplicate_total", 0))
            if rejected or duplicate or counted > expected:
                raise BenchError(
                    f"the worker counted {counted:,} events of {expected:,} published, "
                    f"rejected {rejected:,} and called {duplicate:,} duplicates"
                )
            if counted == expected:
                return counted
            if worker.poll() is not None or time.monotonic() > deadline:
                raise BenchError(
                    f"the worker counted only {counted:,} of {expected:,} published events "
                    f"within {self.args.drain_timeout:.0f} s after the load: {_tail(log_path)}"
                )
            time.sleep(0.2)

    def outcome(
        self,
        published: Published,
        watcher: Watcher,
        measured: set[int],
        before: Snapshot,
        after: Snapshot,
        counted: int,
    ) -> Outcome:
        args = self.args
        if watcher.error is not None:
            raise BenchError(f"a real-time read failed: {watcher.error}")
        if watcher.is_alive():
            raise BenchError("the probe watcher did not finish; raise --probe-timeout")
        if not measured:
            raise BenchError("no probe was sent in the measured period; raise --seconds")
        failures = []
        if watcher.lost:
            failures.append(
                f"{len(watcher.lost)} probe(s) were not visible within {args.probe_timeout:g} s "
                f"of their flush() (first: probe {watcher.lost[0]}): the worker fell behind"
            )
        if published.measured_rate < args.rate * (1 - args.rate_tolerance):
            failures.append(
                f"the load generator achieved {published.measured_rate:,.0f} events/s, "
                f"short of the {args.rate:,.0f} asked by more than {args.rate_tolerance:.0%}: "
                "the machine is too busy (or the rate too high for one generator process)"
            )
        # A probe never seen counts as infinitely late: the percentiles above it say so.
        values = [watcher.freshness.get(n, math.inf) for n in sorted(measured)]
        seconds = after.at - before.at
        cores = after.cpu.cores_since(before.cpu, seconds)
        cores["generator"] = (after.generator_cpu - before.generator_cpu) / seconds
        cores["other"] -= cores["generator"]
        consumed = max(after.counted - before.counted, 1.0) / seconds  # by the worker
        return Outcome(
            form=args.form,
            rate_asked=args.rate,
            seconds=args.seconds,
            published=published,
            probes_measured=len(values),
            freshness_ms={
                "p50": percentile(values, 0.50) * 1000,
                "p90": percentile(values, 0.90) * 1000,
                "p99": percentile(values, 0.99) * 1000,
                "max": max(values) * 1000,
            },
            cores=cores,
            worker_events_per_s=consumed,
            worker_cpu_us_per_event=cores["worker"] / consumed * 1e6,
            redis_cpu_us_per_event=cores["redis"] / consumed * 1e6,
            read_ms_mean=watcher.read_seconds / watcher.reads * 1000 if watcher.reads else 0.0,
            round_ms_mean=statistics.fmean(watcher.rounds) * 1000 if watcher.rounds else 0.0,
            round_ms_max=max(watcher.rounds, default=0.0) * 1000,
            counted=counted,
            worker_settings=args.worker_env,
            failures=failures,
            extra={"reads": watcher.reads, "workdir": str(self.workdir)},
        )

    def cleanup(self) -> None:
        if self.args.keep:
            progress(f"kept {self.workdir}, topics {self.topics} and Redis DB {self.args.redis_db}")
            return
        delete_topics(self.bootstrap, self.topics)
        self.redis.flushdb()
        shutil.rmtree(self.workdir, ignore_errors=True)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- output --------------------------------------------------------------------------------


def report(outcome: Outcome, args: argparse.Namespace) -> str:
    fresh, cores, published = outcome.freshness_ms, outcome.cores, outcome.published
    form = (
        f"batches of up to {args.batch_size} events, {args.linger_ms:g} ms linger"
        if outcome.form == "batch"
        else "one event per message"
    )
    met = "met" if fresh["p99"] <= TARGET_P99_S * 1000 else "NOT met"
    duration = "" if args.seconds >= 60 else " (shorter than the 60 s the issue asks for)"
    settings = ",".join(f"{k}={v}" for k, v in outcome.worker_settings.items()) or "defaults"
    return "\n".join(
        [
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; worker settings: "
            f"{settings}",
            f"form {outcome.form} ({form}), {outcome.rate_asked:,.0f} events/s asked for "
            f"{outcome.seconds:g} s{duration} after {args.warmup:g} s of warm-up",
            f"achieved  {published.measured_rate:,.0f} events/s published in the measured period"
            f" ({published.events:,} events in all, {published.probes:,} probes); the worker "
            f"counted {outcome.worker_events_per_s:,.0f} events/s meanwhile and "
            f"{outcome.counted:,} in the end (incl. one warm-up event)",
            f"freshness {outcome.probes_measured:,} probes, flush() returned -> visible in "
            f"read_realtime: p50 {_ms(fresh['p50'])}  p90 {_ms(fresh['p90'])}  "
            f"p99 {_ms(fresh['p99'])}  max {_ms(fresh['max'])}",
            f"target    p99 <= {TARGET_P99_S * 1000:,.0f} ms: {met} (resolution: a round of "
            f"reads every {outcome.round_ms_mean:.0f} ms on average, {outcome.round_ms_max:.0f}"
            f" ms at most; a read took {outcome.read_ms_mean:.2f} ms on average)",
            f"CPU       worker {cores['worker']:.2f} cores ({outcome.worker_cpu_us_per_event:.1f}"
            f" us/event), redis {cores['redis']:.2f} ({outcome.redis_cpu_us_per_event:.1f}"
            f" us/event, probe reads included), kafka {cores['kafka']:.2f}, generator "
            f"{cores['generator']:.2f}, watcher {cores['bench']:.2f}, other {cores['other']:.2f}",
        ]
    )


def _ms(value: float) -> str:
    return "never seen" if math.isinf(value) else f"{value:,.0f} ms"


def as_json(outcome: Outcome, args: argparse.Namespace) -> bytes:
    document = {
        "command": " ".join(["python", "-m", "tests.perf.freshness", *sys.argv[1:]]),
        "options": vars(args),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "achieved_events_per_s": outcome.published.measured_rate,
        "target_p99_ms": TARGET_P99_S * 1000,
        **asdict(outcome),
    }  # a probe never seen makes its percentiles null (JSON has no infinity)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


# -- command line -------------------------------------------------------------------------


def _env(spec: str) -> dict[str, str]:
    env = {}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.startswith("VOICEMON_"):
            raise argparse.ArgumentTypeError(f"expected VOICEMON_NAME=VALUE, got {part!r}")
        env[key] = value
    return env


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.freshness",
        description=__doc__.split("\n")[0] if __doc__ else "",
    )
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--form", choices=("batch", "single"), required=True)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured period (s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before measuring (s)")
    parser.add_argument("--probe-every-ms", type=float, default=50.0)
    parser.add_argument("--poll-ms", type=float, default=10.0, help="read every pending probe")
    parser.add_argument(
        "--max-reads-per-s",
        type=float,
        default=500.0,
        help="cap on the watcher's reads (each ~0.25 ms of CPU); rounds stretch beyond it",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="batch form: events/msg")
    parser.add_argument("--linger-ms", type=float, default=50.0, help="batch form: linger")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rate-tolerance", type=float, default=0.02)
    parser.add_argument("--probe-timeout", type=float, default=120.0, help="per probe (s)")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="for the worker to count all (s)"
    )
    parser.add_argument("--redis-db", type=int, default=12, help="owned and flushed by the bench")
    parser.add_argument(
        "--worker-env",
        type=_env,
        action="append",
        default=[],
        help="worker settings, e.g. VOICEMON_BATCH_MAX_SECONDS=0.2 (repeatable)",
    )
    parser.add_argument("--closer", action="store_true", help="leave the window closer on")
    parser.add_argument("--keep", action="store_true", help="keep topics, Redis DB and files")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the report")
    args = parser.parse_args(argv)
    args.worker_env = {k: v for env in args.worker_env for k, v in env.items()}
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        outcome = bench.run()
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
    if args.json:
        sys.stdout.buffer.write(as_json(outcome, args) + b"\n")
    else:
        print(report(outcome, args))
    for failure in outcome.failures:
        print(f"benchmark failed: {failure}", file=sys.stderr)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
