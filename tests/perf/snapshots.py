"""Window closing and history queries on a full-size store (issue 3): a report, not a test.

    python -m tests.perf.snapshots [--events 1000000] [--orgs 1000] [--other-hour-events 200000]
                                   [--repeat 7] [--limit 100] [--wait-quiet 600] [--keep]
                                   [--json] [--save FILE]

One process, its own embedded chDB store in a temporary directory (deleted at the end;
``--keep`` keeps it), no Kafka and no Redis. Setup, not timed:

1. one hour of raw events (``--events``, default 1,000,000) across ``--orgs`` organizations:
   whole artifact lifecycles (received, every stage started then completed or failed,
   completed or failed) with durations (some missing), AI costs (some missing), 1 % of the
   artifacts without an organization and 1 % duplicate rows that the hour query must drop;
   inserted column-oriented into ``voicemon.pipeline_events`` as ``RawWriter`` does;
2. the 23 other hours of that day, smaller (``--other-hour-events``, every organization
   present in each), each closed with ``compute_hour`` + ``write`` like the closer does.

Timed (``--repeat`` runs each; the first run is reported apart from the warm ones):

a. ``snapshots.compute_hour`` + ``snapshots.write`` of the big hour (target <= 2 s);
b. ``snapshots.compute_day`` + ``snapshots.write`` of the day: 24 hourly sets x every
   organization present (target <= 1 s);
c. ``queries.history`` and ``queries.stages`` (platform and one organization) and
   ``queries.organizations`` over 90 daily and over 7 x 24 hourly snapshots, every
   organization present in every one of them (target <= 200 ms each). The other days and
   hours are copies of the computed ones with their period moved, written one window per
   insert as the closer writes them.

Every timing is checked against the generated data (e.g. the platform's artifacts_received
equals the number of distinct artifact_received events), so the timings are of real work.
``engine ms`` is the time chDB reports for the call's SQL (``elapsed_ns`` of each query and
insert), the rest of the wall time is Python: driver encoding/decoding and voicemon's code.
TTL merges are stopped in the private store, so rows older than their retention stay put.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from aggregators.closing import snapshots
from aggregators.query import queries
from aggregators.snapshot_rows import DAILY, HOURLY, SnapshotSet
from consumers.raw_writer import SCHEMA, TABLE
from voicemon import windows
from voicemon.settings import DEFAULT_STAGES
from voicemon.store import Client, connect
from voicemon.store_migrations import migrate
from voicemon.windows import DAY_MS, HOUR_MS, day_start

ROOT = Path(__file__).resolve().parents[2]
STAGES = DEFAULT_STAGES
BUSY_PATTERN = "pytest|tests.soak|tests.perf.ingest"
HOUR_TARGET_S, DAY_TARGET_S, QUERY_TARGET_S = 2.0, 1.0, 0.2
HISTORY_DAYS, HISTORY_HOURS = 90, 7 * 24
BIG_HOUR = 12  # hour of the day that gets the full-size raw data


class BenchError(Exception):
    """The benchmark cannot run, or a result is wrong (so its timing would be meaningless)."""


# -- machine ------------------------------------------------------------------------------


def busy_jobs() -> list[str]:
    """Other test or benchmark processes running now (``pgrep -af``), this one excluded."""
    found = subprocess.run(["pgrep", "-af", BUSY_PATTERN], capture_output=True, text=True)
    mine = {os.getpid(), os.getppid()}
    return [
        line
        for line in found.stdout.splitlines()
        if line and int(line.split()[0]) not in mine and "pgrep" not in line
    ]


def wait_quiet(max_wait_s: float) -> list[str]:
    """Wait up to ``max_wait_s`` for the machine to be quiet; the jobs still running."""
    deadline = time.monotonic() + max_wait_s
    jobs = busy_jobs()
    while jobs and time.monotonic() < deadline:
        time.sleep(5)
        jobs = busy_jobs()
    return jobs


def revision() -> str:
    """The commit measured, with ``+dirty`` when the work tree differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}"


# -- raw data -----------------------------------------------------------------------------


@dataclass
class RawHour:
    """The generated hour: insert columns (``SCHEMA`` order) and what it must sum to."""

    hour_ms: int
    columns: list[list[Any]]
    by_type: Counter[str] = field(default_factory=Counter)
    received_by_org: Counter[str] = field(default_factory=Counter)

    @property
    def rows(self) -> int:
        return len(self.columns[0])


def organization_picker(rng: random.Random, orgs: int) -> Callable[[int], str | None]:
    """Artifact number -> organization: each org once first, then skewed (1/(rank+20))."""
    names = [f"org-{i:05d}" for i in range(orgs)]
    weights = [1 / (rank + 20) for rank in range(orgs)]

    def pick(artifact: int) -> str | None:
        if artifact < orgs:
            return names[artifact]
        if rng.random() < 0.01:
            return None  # an artifact without an organization: platform only
        return rng.choices(names, weights)[0]

    return pick


def lifecycle(rng: random.Random, start_ms: int, end_ms: int) -> list[tuple[Any, ...]]:
    """One artifact's events: (type, at_ms, stage, duration_ms, ai_cost_usd, error_code)."""
    at = start_ms
    events: list[tuple[Any, ...]] = [("artifact_received", at, None, None, None, None)]
    for stage in STAGES:
        at = min(at + rng.randrange(1, 2000), end_ms - 1)
        events.append(("stage_started", at, stage, None, None, None))
        duration = round(rng.lognormvariate(7, 1.2), 3) if rng.random() < 0.95 else None
        cost = round(rng.uniform(0, 0.05), 6) if rng.random() < 0.8 else None
        at = min(at + rng.randrange(1, 5000), end_ms - 1)
        if rng.random() < 0.03:
            events.append(("stage_failed", at, stage, duration, cost, "E_STAGE"))
            events.append(("artifact_failed", at, None, None, None, "E_STAGE"))
            return events
        events.append(("stage_completed", at, stage, duration, cost, None))
    total = float(at - start_ms) if rng.random() < 0.95 else None
    events.append(("artifact_completed", at, None, total, None, None))
    return events


def generate_hour(
    rng: random.Random, hour_ms: int, events: int, orgs: int, duplicates: float
) -> RawHour:
    """``events`` distinct events in [hour, hour + 1h), plus ``duplicates`` x events copies."""
    hour = RawHour(hour_ms, [[] for _ in SCHEMA.names])
    (event_id, event_type, occurred_at, artifact_id, organization_id, stage, duration_ms,
     ai_cost_usd, error_code, schema_version, partition, offset, batch_index,
     ingested_at) = hour.columns  # fmt: skip
    pick = organization_picker(rng, orgs)
    artifact = 0
    while len(event_id) < events:
        org = pick(artifact)
        start = hour_ms + rng.randrange(HOUR_MS - 1)
        for kind, at, stage_name, duration, cost, error in lifecycle(rng, start, hour_ms + HOUR_MS):
            if len(event_id) == events:
                break
            event_id.append(f"ev-{hour_ms}-{len(event_id)}")
            event_type.append(kind)
            occurred_at.append(at)
            artifact_id.append(f"a-{hour_ms}-{artifact}")
            organization_id.append(org)
            stage.append(stage_name)
            duration_ms.append(duration)
            ai_cost_usd.append(cost)
            error_code.append(error)
            hour.by_type[kind] += 1
            if kind == "artifact_received" and org is not None:
                hour.received_by_org[org] += 1
        artifact += 1
    for _ in range(int(events * duplicates)):  # replayed rows: same event_id, new position
        source = rng.randrange(events)
        for column in hour.columns[:9]:
            column.append(column[source])
    schema_version[:] = [1] * len(event_id)
    partition[:] = [i % 4 for i in range(len(event_id))]
    offset[:] = range(len(event_id))
    batch_index[:] = [0] * len(event_id)
    ingested_at[:] = [hour_ms + HOUR_MS] * len(event_id)
    return hour


def insert_raw(client: Client, hour: RawHour, chunk: int = 100_000) -> None:
    """The column-oriented insert of ``RawWriter.write``, in chunks like worker batches."""
    for start in range(0, hour.rows, chunk):
        client.insert(
            TABLE,
            [column[start : start + chunk] for column in hour.columns],
            column_names=SCHEMA.names,
            column_oriented=True,
        )


# -- timing -------------------------------------------------------------------------------


class RecordingClient:
    """The store client, noting chDB's own time and rows read for every call."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.engine_s = 0.0

    def _note(self, summary: dict[str, Any]) -> None:
        self.engine_s += int(summary.get("elapsed_ns", 0)) / 1e9

    def query(self, *args: Any, **kwargs: Any) -> Any:
        result = self._client.query(*args, **kwargs)
        self._note(result.summary)
        return result

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        summary = self._client.insert(*args, **kwargs)
        self._note(summary.summary)
        return summary

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class Timing:
    name: str
    target_s: float
    runs_s: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    detail: dict[str, float] = field(default_factory=dict)

    @property
    def warm(self) -> list[float]:
        return self.runs_s[1:] or self.runs_s

    @property
    def median_s(self) -> float:
        return statistics.median(self.warm)

    @property
    def max_s(self) -> float:
        return max(self.warm)

    @property
    def met(self) -> bool:
        return self.max_s <= self.target_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target_s": self.target_s,
            "first_s": self.runs_s[0],
            "median_warm_s": self.median_s,
            "max_warm_s": self.max_s,
            "runs_s": self.runs_s,
            "median_engine_s": statistics.median(self.engine_s),
            "met": self.met,
            "busy_jobs": self.busy,
            "detail": self.detail,
        }


def timed(
    name: str,
    target_s: float,
    call: Callable[[Client, int], Any],
    check: Callable[[Any], None],
    client: Client,
    args: argparse.Namespace,
) -> Timing:
    """Run ``call(client, run)`` ``--repeat`` times, checking every result."""
    timing = Timing(name, target_s, busy=wait_quiet(args.wait_quiet))
    for run in range(args.repeat):
        recorder = RecordingClient(client)
        started = time.perf_counter()
        result = call(recorder, run)
        timing.runs_s.append(time.perf_counter() - started)
        timing.engine_s.append(recorder.engine_s)
        check(result)
    timing.busy = sorted(set(timing.busy) | set(busy_jobs()))
    progress(f"{name}: median {timing.median_s * 1000:.0f} ms, max {timing.max_s * 1000:.0f} ms")
    return timing


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- snapshot copies ----------------------------------------------------------------------


def moved(snapshot_set: SnapshotSet, start_ms: int) -> SnapshotSet:
    """The same rows for another window of the same length."""
    length = HOUR_MS if snapshot_set.period_type == HOURLY else DAY_MS
    period = {
        "period_start": windows.utc(start_ms),
        "period_end": windows.utc(start_ms + length),
    }
    return replace(
        snapshot_set,
        period_start_ms=start_ms,
        snapshots=[replace(row, **period) for row in snapshot_set.snapshots],
        stage_snapshots=[replace(row, **period) for row in snapshot_set.stage_snapshots],
    )


def row_of(snapshot_set: SnapshotSet, org: str) -> dict[str, Any]:
    return next(asdict(row) for row in snapshot_set.snapshots if row.organization_id == org)


class WindowClose:
    """One timed close: ``compute`` then ``snapshots.write``, each timed apart."""

    def __init__(self, bench: Bench, compute: Callable[..., Any], start_ms: int) -> None:
        self.bench, self.compute, self.start_ms = bench, compute, start_ms
        self.compute_s: list[float] = []
        self.write_s: list[float] = []
        self.last: SnapshotSet | None = None

    def __call__(self, client: Client, run: int) -> SnapshotSet:
        started = time.perf_counter()
        self.last = self.compute(
            client, self.start_ms, STAGES, self.bench.next_version(), self.bench.now_ms()
        )
        computed = time.perf_counter()
        snapshots.write(client, self.last)
        self.compute_s.append(computed - started)
        self.write_s.append(time.perf_counter() - computed)
        return self.last

    def detail(self) -> dict[str, float]:
        assert self.last is not None
        return {
            "median_warm_compute_s": statistics.median(self.compute_s[1:]),
            "median_warm_write_s": statistics.median(self.write_s[1:]),
            "snapshot_rows": len(self.last.snapshots),
            "stage_rows": len(self.last.stage_snapshots),
        }


# -- the benchmark ------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="voicemon-perf-snapshots-"))
        self.client = connect(f"chdb://{self.workdir}")
        migrate(self.client)
        for table in ("pipeline_events", "snapshots", "stage_snapshots"):
            self.client.command(f"SYSTEM STOP TTL MERGES voicemon.{table}")
        self.day_ms = day_start(int(time.time() * 1000)) - DAY_MS
        self.big_hour_ms = self.day_ms + BIG_HOUR * HOUR_MS
        self.org = "org-00010"  # the organization-scope queries read this one
        self.hours: dict[int, SnapshotSet] = {}
        self.received_by_org: Counter[str] = Counter()
        self.received = 0
        self.version = 1

    def next_version(self) -> int:
        self.version += 1
        return self.version

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    # (a) -----------------------------------------------------------------------------------
    def load_big_hour(self) -> RawHour:
        started = time.perf_counter()
        hour = generate_hour(
            self.rng, self.big_hour_ms, self.args.events, self.args.orgs, self.args.duplicates
        )
        progress(f"generated {hour.rows:,} raw rows in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        insert_raw(self.client, hour)
        self.client.command(f"OPTIMIZE TABLE {TABLE} FINAL")
        progress(f"inserted and merged them in {time.perf_counter() - started:.1f} s")
        self.count_raw(hour)
        return hour

    def count_raw(self, hour: RawHour) -> None:
        self.received += hour.by_type["artifact_received"]
        self.received_by_org.update(hour.received_by_org)

    def check_hour(self, hour: RawHour, snapshot_set: SnapshotSet) -> None:
        platform = row_of(snapshot_set, "")
        expected = {
            "artifacts_received": hour.by_type["artifact_received"],
            "artifacts_completed": hour.by_type["artifact_completed"],
            "artifacts_failed": hour.by_type["artifact_failed"],
        }
        got = {name: platform[name] for name in expected}
        orgs = len(hour.received_by_org)
        if got != expected or len(snapshot_set.snapshots) != orgs + 1:
            raise BenchError(f"hour {hour.hour_ms}: {got} != {expected} or not {orgs} orgs")
        if row_of(snapshot_set, self.org)["artifacts_received"] != hour.received_by_org[self.org]:
            raise BenchError(f"hour {hour.hour_ms}: wrong count for {self.org}")
        started = sum(
            r["started"] for r in snapshot_set.stage_snapshots if not r["organization_id"]
        )
        if started != hour.by_type["stage_started"]:
            raise BenchError(f"hour {hour.hour_ms}: {started} stages started")

    def time_hour(self, hour: RawHour) -> Timing:
        closer = WindowClose(self, snapshots.compute_hour, hour.hour_ms)

        def check(snapshot_set: SnapshotSet) -> None:
            self.check_hour(hour, snapshot_set)
            self.hours[hour.hour_ms] = snapshot_set

        name = f"(a) compute_hour + write, {hour.rows:,} raw rows"
        timing = timed(name, HOUR_TARGET_S, closer, check, self.client, self.args)
        timing.detail = closer.detail()
        self.check_written(HOURLY, hour.hour_ms, len(hour.received_by_org) + 1)
        return timing

    def check_written(self, period_type: str, start_ms: int, rows: int) -> None:
        found = self.client.query(
            "SELECT count() FROM voicemon.snapshots_latest WHERE period_type = {t:String} "
            "AND period_start = fromUnixTimestamp({s:Int64})",
            parameters={"t": period_type, "s": start_ms // 1000},
        ).result_rows[0][0]
        if found != rows:
            raise BenchError(f"{period_type} {start_ms}: {found} rows written, not {rows}")

    # (b) -----------------------------------------------------------------------------------
    def close_other_hours(self) -> list[float]:
        """The day's other 23 hours: generated, inserted, closed like the closer does."""
        compute_s = []
        for index in range(24):
            hour_ms = self.day_ms + index * HOUR_MS
            if hour_ms == self.big_hour_ms:
                continue
            hour = generate_hour(
                self.rng, hour_ms, self.args.other_hour_events, self.args.orgs, 0.0
            )
            insert_raw(self.client, hour)
            self.count_raw(hour)
            started = time.perf_counter()
            snapshot_set = snapshots.compute_hour(self.client, hour_ms, STAGES, 1, self.now_ms())
            snapshots.write(self.client, snapshot_set)
            compute_s.append(time.perf_counter() - started)
            self.check_hour(hour, snapshot_set)
            self.hours[hour_ms] = snapshot_set
        progress(f"closed 23 hours of {self.args.other_hour_events:,} events")
        return compute_s

    def time_day(self) -> tuple[Timing, SnapshotSet]:
        closer = WindowClose(self, snapshots.compute_day, self.day_ms)

        def check(snapshot_set: SnapshotSet) -> None:
            platform = row_of(snapshot_set, "")
            org = row_of(snapshot_set, self.org)["artifacts_received"]
            if platform["artifacts_received"] != self.received:
                raise BenchError(f"day: {platform['artifacts_received']} != {self.received}")
            if org != self.received_by_org[self.org]:
                raise BenchError(f"day: {self.org} has {org}")
            if len(snapshot_set.snapshots) != self.args.orgs + 1:
                raise BenchError(f"day: {len(snapshot_set.snapshots)} snapshot rows")

        name = f"(b) compute_day + write, 24 hours x {self.args.orgs:,} orgs"
        timing = timed(name, DAY_TARGET_S, closer, check, self.client, self.args)
        timing.detail = closer.detail()
        self.check_written(DAILY, self.day_ms, self.args.orgs + 1)
        assert closer.last is not None
        return timing, closer.last

    # (c) -----------------------------------------------------------------------------------
    def fill_history(self, day: SnapshotSet) -> None:
        """89 more days and 144 more hours, one window per insert as the closer writes them."""
        started = time.perf_counter()
        for back in range(1, HISTORY_DAYS):
            snapshots.write(self.client, moved(day, self.day_ms - back * DAY_MS))
        for back in range(1, HISTORY_HOURS // 24):
            for hour_ms, snapshot_set in self.hours.items():
                snapshots.write(self.client, moved(snapshot_set, hour_ms - back * DAY_MS))
        progress(f"wrote {HISTORY_DAYS} days and {HISTORY_HOURS} hours of snapshots in "
                 f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        self.settle_merges()

    def settle_merges(self, timeout_s: float = 120) -> None:
        """Wait for chDB's background merges to finish, as they have for any older window."""
        deadline = time.monotonic() + timeout_s
        previous = None
        while time.monotonic() < deadline:
            merging, parts = self.client.query(
                "SELECT (SELECT count() FROM system.merges WHERE database = 'voicemon'), "
                "(SELECT count() FROM system.parts WHERE database = 'voicemon' AND active)"
            ).result_rows[0]
            if merging == 0 and parts == previous:
                return
            previous = parts
            time.sleep(2)
        progress("background merges still running; measuring anyway")

    def ranges(self) -> dict[str, tuple[str, int, int, int]]:
        """period -> (period_type, start, end, windows): the longest range the API allows."""
        last_hour = self.day_ms + 23 * HOUR_MS
        return {
            "90 days": (DAILY, self.day_ms - (HISTORY_DAYS - 1) * DAY_MS, self.day_ms,
                        HISTORY_DAYS),
            "7x24 hours": (HOURLY, last_hour - (HISTORY_HOURS - 1) * HOUR_MS,
                           last_hour, HISTORY_HOURS),
        }  # fmt: skip

    def query_cases(self) -> list[tuple[str, Callable[[Client, int], Any], Callable[[Any], None]]]:
        cases = []
        for label, (period, start, end, count) in self.ranges().items():
            # every range holds `windows / (days in it)` copies of the computed day
            copies = count if period == DAILY else count // 24
            for org, scope in ((None, "platform"), (self.org, self.org)):
                expected = copies * (self.received_by_org[org] if org else self.received)
                cases.append((
                    f"(c) history {label}, {scope}",
                    lambda c, _, p=period, s=start, e=end, o=org: queries.history(c, p, s, e, o),
                    self.history_check(count, expected),
                ))  # fmt: skip
                cases.append((
                    f"(c) stages {label}, {scope}",
                    lambda c, _, p=period, s=start, e=end, o=org: queries.stages(c, p, s, e, o),
                    self.stages_check(count),
                ))  # fmt: skip
            for limit in sorted({self.args.limit, queries.MAX_ORGANIZATIONS}):
                top = copies * self.received_by_org.most_common(1)[0][1]
                cases.append((
                    f"(c) organizations {label}, limit {limit}",
                    lambda c, _, p=period, s=start, e=end, n=limit: queries.organizations(
                        c, p, s, e, n
                    ),
                    self.organizations_check(min(limit, self.args.orgs), top),
                ))  # fmt: skip
        return cases

    @staticmethod
    def history_check(windows: int, received: int) -> Callable[[Any], None]:
        def check(result: dict[str, Any]) -> None:
            got = (len(result["rows"]), result["summary"]["artifacts_received"])
            if got != (windows, received):
                raise BenchError(f"history: (rows, received) {got} != {(windows, received)}")

        return check

    @staticmethod
    def stages_check(windows: int) -> Callable[[Any], None]:
        def check(result: dict[str, Any]) -> None:
            if len(result["rows"]) != windows * len(STAGES) or len(result["summary"]) != len(
                STAGES
            ):
                raise BenchError(f"stages: {len(result['rows'])} rows")

        return check

    @staticmethod
    def organizations_check(rows: int, top: int) -> Callable[[Any], None]:
        def check(result: dict[str, Any]) -> None:
            found = result["organizations"]
            if len(found) != rows or found[0]["artifacts_received"] != top:
                raise BenchError(f"organizations: {len(found)} rows, top {found[0]}")

        return check

    def estimates(self) -> list[dict[str, Any]]:
        """``EXPLAIN ESTIMATE`` (parts, rows, marks chDB will read) of the merged-range SQL."""
        found = []
        for label, (period, start, end, _) in self.ranges().items():
            for org in ("", self.org):
                for name, sql in (("snapshots", snapshots.MERGED_SNAPSHOT_SQL),
                                  ("stage_snapshots", snapshots.MERGED_STAGE_SQL)):  # fmt: skip
                    sql = sql.replace("{where}", "AND organization_id = {org:String}")
                    parameters = {"period_type": period, "start": start // 1000,
                                  "end": end // 1000, "org": org}  # fmt: skip
                    [(_, _, parts, rows, marks)] = self.client.query(
                        "EXPLAIN ESTIMATE " + sql, parameters=parameters
                    ).result_rows
                    found.append({"range": label, "scope": org or "platform", "table": name,
                                  "parts": parts, "rows": rows, "marks": marks})  # fmt: skip
        return found

    def store_shape(self) -> dict[str, Any]:
        rows = self.client.query(
            "SELECT table, count(), sum(rows), uniqExact(partition) FROM system.parts "
            "WHERE database = 'voicemon' AND active GROUP BY table ORDER BY table"
        ).result_rows
        return {table: {"parts": parts, "rows": total, "partitions": partitions}
                for table, parts, total, partitions in rows}  # fmt: skip

    def run(self) -> dict[str, Any]:
        hour = self.load_big_hour()
        timings = [self.time_hour(hour)]
        del hour
        other_hours_s = self.close_other_hours()
        day_timing, day = self.time_day()
        timings.append(day_timing)
        self.fill_history(day)
        shape = self.store_shape()
        estimates = self.estimates()
        for name, call, check in self.query_cases():
            timings.append(timed(name, QUERY_TARGET_S, call, check, self.client, self.args))
        return {
            "timings": timings,
            "other_hours_median_close_s": statistics.median(other_hours_s),
            "store": shape,
            "store_after": self.store_shape(),
            "estimates": estimates,
        }

    def cleanup(self) -> None:
        if self.args.keep:
            progress(f"store kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- output -------------------------------------------------------------------------------


def table(timings: Sequence[Timing]) -> str:
    lines = [
        "| measurement | first ms | median ms | max ms | engine ms | target ms | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for t in timings:
        busy = " (other jobs running)" if t.busy else ""
        lines.append(
            f"| {t.name}{busy} | {t.runs_s[0] * 1000:,.0f} | {t.median_s * 1000:,.1f} | "
            f"{t.max_s * 1000:,.1f} | {statistics.median(t.engine_s) * 1000:,.1f} | "
            f"{t.target_s * 1000:,.0f} | {'yes' if t.met else '**no**'} |"
        )
    return "\n".join(lines)


def report(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": " ".join(["python", "-m", "tests.perf.snapshots", *sys.argv[1:]]),
        "revision": revision(),
        "machine": machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": vars(args),
        "loadavg_at_end": os.getloadavg(),
        "timings": [t.as_dict() for t in result["timings"]],
        "other_hours_median_close_s": result["other_hours_median_close_s"],
        "store": result["store"],
        "store_after": result["store_after"],
        "estimates": result["estimates"],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.snapshots", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="raw events, timed hour")
    parser.add_argument("--orgs", type=int, default=1000, help="organizations")
    parser.add_argument(
        "--other-hour-events", type=int, default=200_000, help="raw events, each other hour"
    )
    parser.add_argument("--duplicates", type=float, default=0.01, help="duplicate rows share")
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement")
    parser.add_argument("--limit", type=int, default=100, help="organizations query limit")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0,
        help="wait up to this many seconds for other test jobs to end before each timing",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the chDB directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--save", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.repeat < 2 or args.orgs < 11:
        parser.error("--repeat must be >= 2 and --orgs >= 11")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        result = bench.run()
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
    document = report(args, result)
    encoded = orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str)
    if args.save:
        args.save.write_bytes(encoded)
    if args.json:
        print(encoded.decode())
        return 0
    print(f"{document['machine']}; revision {document['revision']}; {document['measured_at']}")
    print(table(result["timings"]))
    print(f"\nother 23 hours: median close (compute_hour + write) "
          f"{result['other_hours_median_close_s'] * 1000:.0f} ms")  # fmt: skip
    for t in result["timings"]:
        if "median_warm_compute_s" in t.detail:
            print(f"{t.name.split(',')[0]}: compute {t.detail['median_warm_compute_s'] * 1000:.0f}"
                  f" ms + write {t.detail['median_warm_write_s'] * 1000:.0f} ms (warm medians); "
                  f"{t.detail['snapshot_rows']:,} snapshot and {t.detail['stage_rows']:,} "
                  "stage rows")  # fmt: skip
    print(f"store when queried: {result['store']}")
    print("merged-range SQL, EXPLAIN ESTIMATE (what chDB reads for one scope):")
    for e in result["estimates"]:
        print(f"  {e['range']}, {e['scope']}, {e['table']}: {e['parts']} parts, "
              f"{e['rows']:,} rows, {e['marks']} marks")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
