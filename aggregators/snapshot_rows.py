"""The snapshot row (CONTRACT §4, §6), defined once: its fields are the table's columns, the
query API's models and what replay compares.

Pure: rows are assembled from aggregated sums (an hour's raw events, or hourly rows merged)
without any I/O. ``voicemon/migrations/0003_snapshots.sql`` holds the same columns as DDL,
and a test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from voicemon import sketch
from voicemon.rolling import ratio
from voicemon.windows import iso, utc

HOURLY = "hourly"
DAILY = "daily"
PLATFORM = "platform"
ORGANIZATION = "organization"
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
SKETCHES = frozenset({"latency_sketch", "duration_sketch"})


@dataclass(frozen=True, kw_only=True)
class ArtifactMetrics:
    """The artifact metrics of §4 for one scope and period."""

    artifacts_received: int
    artifacts_completed: int
    artifacts_failed: int
    failure_rate: float
    latency_samples: int
    avg_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    ai_cost_usd: float
    latency_sketch: dict[int, int]


@dataclass(frozen=True, kw_only=True)
class StageMetrics:
    """The per-stage metrics of §4 for one scope, period and stage."""

    started: int
    completed: int
    failed: int
    failure_rate: float
    duration_samples: int
    avg_duration_ms: float
    p95_duration_ms: float
    duration_sketch: dict[int, int]


@dataclass(frozen=True, kw_only=True)
class WindowKey:
    """Which window and scope a row describes, and which computation wrote it."""

    period_type: str
    scope: str
    organization_id: str  # '' for the platform
    period_start: datetime
    period_end: datetime
    version: int
    computed_at: datetime


@dataclass(frozen=True, kw_only=True)
class Snapshot(WindowKey, ArtifactMetrics):
    """A row of ``voicemon.snapshots``."""


@dataclass(frozen=True, kw_only=True)
class StageSnapshot(WindowKey, StageMetrics):
    """A row of ``voicemon.stage_snapshots``."""

    stage: str


def columns(row_type: type[Any]) -> tuple[str, ...]:
    """The table columns of a row type: its fields."""
    return tuple(f.name for f in fields(row_type))


SNAPSHOT_COLUMNS = columns(Snapshot)
STAGE_COLUMNS = columns(StageSnapshot)
# What identifies a row within its window, and what replay compares for "changed".
COMPARED_COLUMNS = ("scope", "organization_id", *columns(ArtifactMetrics))


@dataclass(slots=True)
class SnapshotSet:
    """The rows one window produces: snapshots and stage snapshots."""

    period_type: str
    period_start_ms: int
    snapshots: list[Snapshot] = field(default_factory=list)
    stage_snapshots: list[StageSnapshot] = field(default_factory=list)


def artifact_metrics(row: Mapping[str, Any], exact: bool) -> ArtifactMetrics:
    """Finish the §4 artifact metrics from sums (and exact percentiles or a sketch)."""
    completed, failed = int(row["artifacts_completed"]), int(row["artifacts_failed"])
    samples = int(row["latency_samples"])
    merged = sketch.bounded({int(k): int(v) for k, v in row["latency_sketch"].items()})
    percentiles = {
        f"{name}_latency_ms": float(row[f"{name}_latency_ms"])
        if exact
        else sketch.quantile(merged, p)
        for name, p in PERCENTILES.items()
    }
    return ArtifactMetrics(
        artifacts_received=int(row["artifacts_received"]),
        artifacts_completed=completed,
        artifacts_failed=failed,
        failure_rate=ratio(failed, completed + failed),
        latency_samples=samples,
        avg_latency_ms=ratio(float(row["latency_sum"]), samples),
        ai_cost_usd=float(row["ai_cost_usd"]),
        latency_sketch=merged,
        **percentiles,
    )


def stage_metrics(row: Mapping[str, Any], exact: bool) -> StageMetrics:
    """Finish the §4 stage metrics from sums (and an exact p95 or a sketch)."""
    completed, failed = int(row["completed"]), int(row["failed"])
    samples = int(row["duration_samples"])
    merged = sketch.bounded({int(k): int(v) for k, v in row["duration_sketch"].items()})
    return StageMetrics(
        started=int(row["started"]),
        completed=completed,
        failed=failed,
        failure_rate=ratio(failed, completed + failed),
        duration_samples=samples,
        avg_duration_ms=ratio(float(row["duration_sum"]), samples),
        p95_duration_ms=float(row["p95_duration_ms"]) if exact else sketch.quantile(merged, 0.95),
        duration_sketch=merged,
    )


EMPTY_ARTIFACTS: Mapping[str, Any] = {
    "artifacts_received": 0, "artifacts_completed": 0, "artifacts_failed": 0,
    "latency_samples": 0, "latency_sum": 0, "latency_sketch": {}, "ai_cost_usd": 0,
}  # fmt: skip
EMPTY_STAGE: Mapping[str, Any] = {
    "started": 0, "completed": 0, "failed": 0, "duration_samples": 0, "duration_sum": 0,
    "duration_sketch": {},
}  # fmt: skip


def no_artifacts() -> ArtifactMetrics:
    return artifact_metrics(EMPTY_ARTIFACTS, exact=False)


def snapshot_rows(
    period_type: str,
    start_ms: int,
    length_ms: int,
    artifacts: Mapping[str, ArtifactMetrics],
    stage_rows: Mapping[tuple[str, str], StageMetrics],
    stages: Sequence[str],
    version: int,
    computed_at_ms: int,
) -> SnapshotSet:
    """A window's rows from its metrics per organization ('' for the platform) and per
    (organization, stage): the platform always has a row, and one per configured stage."""
    artifacts = {"": no_artifacts(), **artifacts}
    empty_stage = stage_metrics(EMPTY_STAGE, exact=False)
    stage_rows = {("", stage): empty_stage for stage in stages} | dict(stage_rows)
    key: dict[str, Any] = {"period_type": period_type, "period_start": utc(start_ms),
           "period_end": utc(start_ms + length_ms), "version": version,
           "computed_at": utc(computed_at_ms)}  # fmt: skip
    result = SnapshotSet(period_type, start_ms)
    for org, metrics in sorted(artifacts.items()):
        scope = ORGANIZATION if org else PLATFORM
        result.snapshots.append(
            Snapshot(scope=scope, organization_id=org, **key, **_fields(metrics))
        )
    for (org, stage), stage_metric in sorted(stage_rows.items()):
        scope = ORGANIZATION if org else PLATFORM
        result.stage_snapshots.append(
            StageSnapshot(
                scope=scope, organization_id=org, stage=stage, **key, **_fields(stage_metric)
            )
        )
    return result


def _fields(metrics: ArtifactMetrics | StageMetrics) -> dict[str, Any]:
    return {f.name: getattr(metrics, f.name) for f in fields(metrics)}


def public(row: Any) -> dict[str, Any]:
    """A row or metrics as the query surface shows them: every field but the sketches."""
    return {name: value for name, value in _fields(row).items() if name not in SKETCHES}


def message(snapshot: Snapshot, stage_rows: Sequence[StageSnapshot]) -> tuple[bytes, bytes]:
    """The ``voice.pipeline.snapshots`` record of a snapshot row and its scope's stage rows:
    (key, JSON value)."""
    start_ms = int(snapshot.period_start.timestamp() * 1000)
    key = f"{snapshot.period_type}:{snapshot.scope}:{snapshot.organization_id}:{iso(start_ms)}"
    value = orjson.dumps(
        asdict(snapshot) | {"stages": [asdict(row) for row in stage_rows]},
        option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z,
    )
    return key.encode(), value


_TIMES = ("period_start", "period_end", "computed_at")


def from_message(value: bytes) -> tuple[Snapshot, list[StageSnapshot]]:
    """The rows a ``message`` value carries (its inverse): a record kept for republishing is
    written back to the store from these when its rows never reached it."""
    decoded = orjson.loads(value)

    def row(fields_: dict[str, Any], row_type: type[Any]) -> Any:
        for name in _TIMES:
            fields_[name] = datetime.fromisoformat(fields_[name]).astimezone(UTC)
        for name in SKETCHES & fields_.keys():
            fields_[name] = {int(k): int(v) for k, v in fields_[name].items()}
        return row_type(**fields_)

    stages = [row(stage, StageSnapshot) for stage in decoded.pop("stages")]
    return row(decoded, Snapshot), stages


# Kafka's own bytes around one record's key and value in a batch of one (batch header 61
# bytes, record header and varints at most 21, no headers), with room to spare.
RECORD_OVERHEAD_BYTES = 256
_MAX_ID = "o" * 128  # the longest organization_id the validator accepts (CONTRACT §3)
_MAX_INT = 2**64 - 1  # the widest count a UInt64 column holds
_WIDEST_FLOAT = -2.2250738585072014e-308  # the longest float text JSON gives


def worst_case_record_bytes(stages: Sequence[str]) -> int:
    """The size of the largest snapshot record any events can produce with ``stages``
    configured: every field at its widest, every sketch full (every bucket it can hold)."""
    full = dict.fromkeys(range(sketch.MIN_KEY, sketch.MAX_KEY + 1), _MAX_INT)
    full[sketch.ZERO_BUCKET] = _MAX_INT
    widest = datetime(2000, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    key: dict[str, Any] = {"period_type": HOURLY, "scope": ORGANIZATION,
           "organization_id": _MAX_ID, "period_start": widest, "period_end": widest,
           "version": _MAX_INT, "computed_at": widest}  # fmt: skip

    def widest_of(row_type: type[Any], sketch_field: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f in fields(row_type):
            if f.name not in key:
                values[f.name] = _MAX_INT if f.type == "int" else _WIDEST_FLOAT
        return values | {sketch_field: full}

    metrics = widest_of(ArtifactMetrics, "latency_sketch")
    stage_metric = widest_of(StageMetrics, "duration_sketch")
    rows = [StageSnapshot(stage=stage, **key, **stage_metric) for stage in stages]
    record_key, value = message(Snapshot(**key, **metrics), rows)
    return len(record_key) + len(value) + RECORD_OVERHEAD_BYTES
