"""The soak-and-fault harness (issue "scale out and survive faults").

    python -m tests.soak.run --events 1000000 --fault-seconds 30      # the long run
    python -m tests.soak.run --redis sentinel   # or cluster: Redis of the harness's own
    python -m pytest tests/integration/test_soak.py                  # the short runs in CI

It publishes a seeded stream (duplicates, malformed messages and late events mixed in) in
chunks while it injects faults — SIGKILLed workers, Redis stopped and restarted, the
rolling-counter keys flushed, the store failing and hanging, the Kafka broker restarted, a
second counting worker joining and leaving; on a Redis of its own (``--redis sentinel`` or
``cluster``, ``tests.integration.redis_topology``) the Redis fault is a failover instead: the
Sentinel primary SIGKILLed, or a Cluster node SIGKILLed and restarted — then compares every
number voicemon reports with the independent reference: real-time counters, raw rows, DLQ
records and the snapshots of the closed hours the late events fell into. One store worker
(the embedded store belongs to one process) and one or two counting workers run, as
CONTRACT §1 allows on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests import reference
from tests.integration.harness import STACK_HOME, Pipeline
from tests.integration.redis_topology import Cluster, SentinelGroup, redis_cluster, sentinel_group
from voicemon import keys
from voicemon.devtools.loadgen import LoadMix
from voicemon.devtools.localstack import LocalStack
from voicemon.rolling import MINUTE_MS, first_minute
from voicemon.settings import Settings
from voicemon.windows import HOUR_MS

COUNTERS = {"VOICEMON_WORKER_ROLE": "counters", "VOICEMON_BATCH_MAX_MESSAGES": "200"}
FAULTS = ("kill", "redis_restart", "counters_flush", "store_fail", "store_hang",
          "store_hang_past_rebalance", "kafka_restart", "rebalance")  # fmt: skip
TOPOLOGIES = ("local", "sentinel", "cluster")


# On a Redis topology of its own the run keeps the faults that meet Redis (the Kafka restart
# and the long store hang are the local run's: on 2 busy cores a broker restart outlasted
# the 120 s readiness wait of the runs that had them).
TOPOLOGY_FAULTS = ("kill", "redis_failover", "counters_flush", "store_fail", "rebalance")


def faults(topology: str) -> tuple[str, ...]:
    """The fault kinds of a run: on a topology of its own, Redis fails over instead of
    restarting."""
    return FAULTS if topology == "local" else TOPOLOGY_FAULTS


@dataclass
class SoakReport:
    events: int
    unique_events: int
    malformed: int
    late_events: int
    faults: list[str] = field(default_factory=list)
    recovery_seconds: dict[str, float] = field(default_factory=dict)
    peak_store_rss_mb: float = 0.0
    lost: dict[str, int] = field(default_factory=dict)
    double_counted: dict[str, int] = field(default_factory=dict)
    # The rows of event_ids stored more than once (up to 20 ids), to find the seam, and when
    # each fault began (wall clock, ms), to set them beside the rows' ingested_at.
    doubled_rows: list[dict[str, Any]] = field(default_factory=list)
    fault_started_ms: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exact(self) -> bool:
        return not any(self.lost.values()) and not any(self.double_counted.values())


def build_stream(
    events: int, seed: int, stages: tuple[str, ...]
) -> tuple[list[Any], list[dict[str, Any]], int, int]:
    """Messages to publish, the events among them, malformed count and late-event count."""
    mix = LoadMix(seed=seed, organizations=20, stages=stages, duplicate_share=0.02,
                  malformed_share=0.002)  # fmt: skip
    now = int(time.time() * 1000)
    clock = iter(lambda: int(time.time() * 1000), None)
    rng = random.Random(seed)
    items: list[dict[str, Any] | bytes] = []
    late = 0
    for item in mix.stream(clock):
        if len(items) >= events:
            break
        if isinstance(item, dict) and rng.random() < 0.01:  # late: an hour that has closed
            hours_back = rng.choice((2, 3))
            item = dict(item, occurred_at=now - now % HOUR_MS - hours_back * HOUR_MS
                        + rng.randrange(HOUR_MS), event_id=f"late-{item['event_id']}")  # fmt: skip
            late += 1
        items.append(item)
    messages: list[Any] = []
    batch: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, bytes) or rng.random() < 0.05:
            messages.append(item)
            continue
        batch.append(item)
        if len(batch) >= rng.randint(50, 500):
            messages.append(batch)
            batch = []
    messages.extend([batch] if batch else [])
    only_events = [item for item in items if isinstance(item, dict)]
    return messages, only_events, len(items) - len(only_events), late


class Soak:
    def __init__(self, settings: Settings, workdir: Path, fault_seconds: float, seed: int,
                 topology: str = "local") -> None:  # fmt: skip
        self.pipeline = Pipeline(settings, workdir)
        self.topology = contextlib.ExitStack()
        self.sentinel: SentinelGroup | None = None
        self.cluster: Cluster | None = None
        if topology == "sentinel":
            self.sentinel = self.topology.enter_context(sentinel_group(workdir / "sentinel"))
            self.pipeline.use_redis(VOICEMON_REDIS_SENTINELS=self.sentinel.addresses,
                                    VOICEMON_REDIS_WAIT_REPLICAS="1")  # fmt: skip
        elif topology == "cluster":
            self.cluster = self.topology.enter_context(redis_cluster(workdir / "cluster"))
            self.pipeline.use_redis(VOICEMON_REDIS_URL=self.cluster.url,
                                    VOICEMON_REDIS_CLUSTER="true")  # fmt: skip
        self.stack = LocalStack(settings, STACK_HOME)
        self.fault_seconds = fault_seconds
        self.rng = random.Random(seed)
        self.control = workdir / "store-fault"
        self.control.write_text("")
        self.store_env = {
            "VOICEMON_WORKER_ROLE": "store",
            "VOICEMON_FAULT_FILE": str(self.control),
            "VOICEMON_CLOSER_INTERVAL_SECONDS": "1",
            "VOICEMON_LATE_DEBOUNCE_SECONDS": "1",
        }
        self.groups = [self.pipeline.settings.consumer_group,
                       self.pipeline.settings.consumer_group + "-store"]  # fmt: skip
        self.store_worker = self._start_store()
        self.counting = [self.pipeline.start_worker(**COUNTERS)]
        self.peak_rss_mb = 0.0
        self.kills = 0
        self.wait_ready()  # faults hit a running pipeline (a worker cannot start without Kafka)

    def _start_store(self) -> subprocess.Popen[bytes]:
        return self.pipeline.start_worker(module="tests.soak.faulty_worker", **self.store_env)

    def sample_rss(self) -> None:
        try:
            status = Path(f"/proc/{self.store_worker.pid}/status").read_text()
        except OSError:
            return
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match:
            self.peak_rss_mb = max(self.peak_rss_mb, int(match.group(1)) / 1024)

    def ready(self, process: subprocess.Popen[bytes]) -> bool:
        return self.readiness(process) == "ready"

    def readiness(self, process: subprocess.Popen[bytes]) -> str:
        """'ready', or what the worker's /readyz says (or why it did not answer)."""
        url = f"http://127.0.0.1:{process.web_port}/readyz"  # type: ignore[attr-defined]
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                return "ready" if answer.status == 200 else answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.read().decode()
        except Exception as error:
            return repr(error)

    def wait_ready(self, timeout_s: float = 120) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self.sample_rss()
            if all(self.ready(p) for p in [self.store_worker, *self.counting]):
                return time.monotonic() - started
            time.sleep(0.5)
        states = {p.pid: self.readiness(p) for p in [self.store_worker, *self.counting]}
        raise AssertionError(
            f"workers did not become ready again: {states}\n"
            + "\n".join(self.last_words(p) for p in [self.store_worker, *self.counting])
        )

    @staticmethod
    def last_words(process: subprocess.Popen[bytes], lines: int = 40) -> str:
        """A worker's exit status (None: running) and the end of its log, for a failure."""
        log: Path = process.log_path  # type: ignore[attr-defined]
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return f"-- worker {process.pid} ({process.poll()=}) {log.name}:\n" + "\n".join(tail)

    def hold(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sample_rss()
            time.sleep(0.5)

    # -- faults --------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the store worker and a counting worker in turn."""
        self.kills += 1
        victim = self.store_worker if self.kills % 2 else self.rng.choice(self.counting)
        self.pipeline.kill_worker(victim)
        if victim is self.store_worker:
            self.store_worker = self._start_store()
        else:
            self.counting.remove(victim)
            self.counting.append(self.pipeline.start_worker(**COUNTERS))

    def redis_restart(self) -> None:
        self.stack.stop("redis")
        self.hold(self.fault_seconds)
        self.stack.up()

    def redis_failover(self) -> None:
        """The Sentinel primary SIGKILLed (a replica is promoted; the old primary returns
        empty, as a replica), or a Cluster node SIGKILLed and restarted from its AOF."""
        if self.sentinel is not None:
            group = self.sentinel
            old = group.node_on(group.primary_port())
            old.kill()
            deadline = time.monotonic() + 60
            while group.primary_port() == old.port:
                assert time.monotonic() < deadline, "the Sentinels did not fail over"
                time.sleep(0.1)
            self.hold(self.fault_seconds)
            old.start()
        elif self.cluster is not None:
            victim = self.rng.choice(self.cluster.nodes)
            victim.kill()
            self.hold(self.fault_seconds)
            victim.start()
            self.cluster.wait_healthy()

    def counters_flush(self) -> None:
        self.pipeline.wait_consumed(timeout_s=600, groups=self.groups)  # quiescent, see docs
        for key in self.pipeline.redis.scan_iter("vm:rz:*"):
            self.pipeline.redis.delete(key)
        deadline = time.monotonic() + 60
        while not self.pipeline.redis.exists(keys.COUNTERS_SENTINEL):
            assert time.monotonic() < deadline, "rolling counters were not rebuilt"
            time.sleep(0.5)

    def store_fail(self) -> None:
        self.control.write_text("fail")
        self.hold(self.fault_seconds)
        self.control.write_text("")

    def store_hang(self) -> None:
        self.control.write_text("hang")
        self.hold(self.fault_seconds)
        self.control.write_text("")

    def store_hang_past_rebalance(self) -> None:
        """The store hangs three fault times (90 s in the long run, longer than the 60 s
        rebalance timeout) while the counting group rebalances around it."""
        self.control.write_text("hang")
        self.rebalance()
        self.hold(2.5 * self.fault_seconds)
        self.control.write_text("")

    def kafka_restart(self) -> None:
        self.stack.stop("kafka")
        self.hold(min(self.fault_seconds, 10))
        self.stack.up()

    def rebalance(self) -> None:
        joined = self.pipeline.start_worker(**COUNTERS)
        self.counting.append(joined)
        self.hold(self.fault_seconds / 2)
        leaving = self.counting.pop(0)
        leaving.terminate()
        leaving.wait(timeout=60)
        self.pipeline.workers.remove(leaving)

    def inject(self, fault: str) -> float:
        started = time.monotonic()
        getattr(self, fault)()
        self.wait_ready()
        return time.monotonic() - started


def run(settings: Settings, workdir: Path, events: int, seed: int, fault_seconds: float,
        kills: int = 5, log: Callable[[str], None] = print,
        topology: str = "local") -> SoakReport:  # fmt: skip
    started = time.monotonic()
    messages, stream_events, malformed, late = build_stream(events, seed, settings.stages)
    report = SoakReport(len(stream_events), len(reference.first_occurrences(stream_events)),
                        malformed, late)  # fmt: skip
    soak = Soak(settings, workdir, fault_seconds, seed, topology)
    plan = ["kill"] * kills + [f for f in faults(topology) if f != "kill"]
    soak.rng.shuffle(plan)
    chunks = len(plan) + 1
    size = -(-len(messages) // chunks)
    try:
        for number in range(chunks):
            soak.pipeline.publish(messages[number * size : (number + 1) * size])
            if number < len(plan):
                fault = plan[number]
                log(f"fault {number + 1}/{len(plan)}: {fault}")
                report.fault_started_ms[f"{number + 1}:{fault}"] = int(time.time() * 1000)
                report.recovery_seconds[f"{number + 1}:{fault}"] = round(soak.inject(fault), 1)
                report.faults.append(fault)
        soak.pipeline.wait_consumed(timeout_s=900, groups=soak.groups)
        compare(soak.pipeline, stream_events, malformed, report)
    finally:
        report.peak_store_rss_mb = round(soak.peak_rss_mb, 1)
        soak.pipeline.stop_workers()
        soak.stack.up()
        soak.topology.close()
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _difference(report: SoakReport, name: str, expected: int, actual: int) -> None:
    report.lost[name] = max(0, expected - actual)
    report.double_counted[name] = max(0, actual - expected)


def compare(
    pipeline: Pipeline, events: list[dict[str, Any]], malformed: int, report: SoakReport
) -> None:
    unique = reference.first_occurrences(events)
    stages = pipeline.settings.stages
    now = int(time.time() * 1000)
    in_window = [e for e in unique if reference.event_ms(e) // MINUTE_MS >= first_minute(now)]
    expected_rt = reference.metrics(in_window, stages)
    actual_rt = pipeline.realtime(now_ms=now)
    for name in ("artifacts_received", "artifacts_completed", "artifacts_failed"):
        _difference(report, f"realtime {name}", expected_rt[name], actual_rt[name])
    late_hours = sorted({reference.event_ms(e) - reference.event_ms(e) % HOUR_MS for e in unique
                         if str(e["event_id"]).startswith("late-")})  # fmt: skip
    wait_for_snapshots(pipeline, unique, late_hours)
    pipeline.stop_workers()
    [row] = pipeline.sql("SELECT count() AS n FROM voicemon.pipeline_events")
    _difference(report, "raw rows", len(unique), row["n"])
    if report.double_counted["raw rows"]:
        report.doubled_rows = [
            {name: str(value) for name, value in found.items()}
            for found in pipeline.sql(
                "SELECT event_id, event_type, occurred_at, kafka_partition, kafka_offset, "
                "batch_index, ingested_at FROM voicemon.pipeline_events WHERE event_id IN ("
                "SELECT event_id FROM voicemon.pipeline_events GROUP BY event_id "
                "HAVING count() > 1 LIMIT 20) ORDER BY event_id, ingested_at"
            )
        ]
    _difference(report, "dlq records", malformed, len(pipeline.dlq()))
    for hour in late_hours:
        expected = reference.metrics(
            [e for e in unique if hour <= reference.event_ms(e) < hour + HOUR_MS], stages
        )
        [stored] = pipeline.sql(
            "SELECT artifacts_received, artifacts_completed, artifacts_failed "
            "FROM voicemon.snapshots_latest WHERE period_type = 'hourly' AND scope = 'platform' "
            f"AND toUnixTimestamp(period_start) = {hour // 1000}"
        )
        for name, value in stored.items():
            _difference(report, f"hourly {time.strftime('%H:00', time.gmtime(hour / 1000))} {name}",
                        expected[name], value)  # fmt: skip


def wait_for_snapshots(pipeline: Pipeline, unique: list[dict[str, Any]], hours: list[int]) -> None:
    """Until the snapshots topic shows every late hour re-emitted with its final count."""
    deadline = time.monotonic() + 120
    wanted = {
        time.strftime("hourly:platform::%Y-%m-%dT%H:00:00Z", time.gmtime(h / 1000)): sum(
            1 for e in unique if e["event_type"] == "artifact_received"
            and h <= reference.event_ms(e) < h + HOUR_MS
        )
        for h in hours
    }  # fmt: skip
    while time.monotonic() < deadline:
        latest = {key: value for key, value in pipeline.snapshot_records() if key in wanted}
        if all(k in latest and latest[k]["artifacts_received"] == n for k, n in wanted.items()):
            return
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-seconds", type=float, default=30)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--redis", choices=TOPOLOGIES, default="local",
                        help="the local stack's Redis, or a topology of its own")  # fmt: skip
    parser.add_argument("--workdir", type=Path,
                        help="keep the workers' logs and store here (default: a temporary "
                        "directory, removed at the end)")  # fmt: skip
    args = parser.parse_args()
    settings = Settings()
    LocalStack(settings, STACK_HOME).up()
    with contextlib.ExitStack() as kept:
        workdir = args.workdir or Path(kept.enter_context(
            tempfile.TemporaryDirectory(prefix="voicemon-soak-")))  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)  # a --workdir that does not exist yet
        report = run(settings, workdir, args.events, args.seed, args.fault_seconds,
                     args.kills, topology=args.redis)  # fmt: skip
    print(
        orjson.dumps(report.__dict__ | {"exact": report.exact}, option=orjson.OPT_INDENT_2).decode()
    )
    sys.exit(0 if report.exact else 1)


if __name__ == "__main__":
    main()
