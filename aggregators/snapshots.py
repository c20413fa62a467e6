"""Hourly and daily snapshots (CONTRACT §4, §6): computed in ClickHouse, finished in Python.

An hour is computed from its raw events, deduplicated by ``event_id``, in one query with
GROUPING SETS (platform, each organization, each stage, each organization x stage).
Percentiles of an hour are exact nearest-rank. A day, and any range a query asks for, is
merged from hourly rows in one query: counts and costs summed, averages weighted by their
sample counts, percentiles read from the summed latency sketches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from aggregators.windows import DAY_MS, HOUR_MS
from voicemon import sketch
from voicemon.rolling import ratio
from voicemon.store import Client

HOURLY = "hourly"
DAILY = "daily"
PLATFORM = "platform"
ORGANIZATION = "organization"
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}

SNAPSHOT_COLUMNS = (
    "period_type", "scope", "organization_id", "period_start", "period_end",
    "artifacts_received", "artifacts_completed", "artifacts_failed", "failure_rate",
    "latency_samples", "avg_latency_ms", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms",
    "ai_cost_usd", "latency_sketch", "version", "computed_at",
)  # fmt: skip
STAGE_COLUMNS = (
    "period_type", "scope", "organization_id", "period_start", "stage", "period_end",
    "started", "completed", "failed", "failure_rate", "duration_samples", "avg_duration_ms",
    "p95_duration_ms", "duration_sketch", "version", "computed_at",
)  # fmt: skip


def _nearest_rank_sql(values: str, p: float) -> str:
    n = f"length({values})"
    index = f"least(intDiv({n} * {round(p * 100)}, 100), {n} - 1) + 1"
    return f"if({n} = 0, 0, {values}[{index}])"


_HOUR_SQL = f"""
SELECT
    by_organization, by_stage, organization, stage,
    artifacts_received, artifacts_completed, artifacts_failed, ai_cost_usd,
    length(latencies) AS latency_samples, arraySum(latencies) AS latency_sum,
    {_nearest_rank_sql("latencies", 0.50)} AS p50_latency_ms,
    {_nearest_rank_sql("latencies", 0.95)} AS p95_latency_ms,
    {_nearest_rank_sql("latencies", 0.99)} AS p99_latency_ms,
    latency_sketch,
    started, completed, failed,
    length(durations) AS duration_samples, arraySum(durations) AS duration_sum,
    {_nearest_rank_sql("durations", 0.95)} AS p95_duration_ms,
    duration_sketch
FROM (
    SELECT
        grouping(organization) = 0 AS by_organization,
        grouping(stage) = 0 AS by_stage,
        organization, stage,
        countIf(event_type = 'artifact_received') AS artifacts_received,
        countIf(event_type = 'artifact_completed') AS artifacts_completed,
        countIf(event_type = 'artifact_failed') AS artifacts_failed,
        sum(ifNull(ai_cost_usd, 0)) AS ai_cost_usd,
        arraySort(groupArrayIf(duration, is_latency)) AS latencies,
        sumMapIf(map({sketch.bucket_sql("duration")}, toUInt64(1)), is_latency) AS latency_sketch,
        countIf(event_type = 'stage_started') AS started,
        countIf(event_type = 'stage_completed') AS completed,
        countIf(event_type = 'stage_failed') AS failed,
        arraySort(groupArrayIf(duration, is_stage_duration)) AS durations,
        sumMapIf(map({sketch.bucket_sql("duration")}, toUInt64(1)), is_stage_duration)
            AS duration_sketch
    FROM (
        SELECT
            event_type,
            ifNull(organization_id, '') AS organization,
            ifNull(stage, '') AS stage,
            ifNull(duration_ms, 0) AS duration,
            event_type = 'artifact_completed' AND duration_ms IS NOT NULL AS is_latency,
            event_type = 'stage_completed' AND duration_ms IS NOT NULL AS is_stage_duration,
            ai_cost_usd
        FROM voicemon.pipeline_events
        WHERE occurred_at >= fromUnixTimestamp64Milli({{start:Int64}})
          AND occurred_at < fromUnixTimestamp64Milli({{end:Int64}})
        LIMIT 1 BY event_id
    )
    GROUP BY GROUPING SETS ((), (organization), (stage), (organization, stage))
)
"""

MERGED_SNAPSHOT_SQL = """
SELECT scope, organization_id,
    sum(s.artifacts_received) AS artifacts_received,
    sum(s.artifacts_completed) AS artifacts_completed,
    sum(s.artifacts_failed) AS artifacts_failed,
    sum(s.ai_cost_usd) AS ai_cost_usd,
    sum(s.latency_samples) AS latency_samples,
    sum(s.avg_latency_ms * s.latency_samples) AS latency_sum,
    sumMap(s.latency_sketch) AS latency_sketch
FROM voicemon.snapshots_latest AS s
WHERE period_type = {period_type:String}
  AND period_start >= fromUnixTimestamp({start:Int64})
  AND period_start <= fromUnixTimestamp({end:Int64})
  {where}
GROUP BY scope, organization_id
"""

MERGED_STAGE_SQL = """
SELECT scope, organization_id, stage,
    sum(s.started) AS started,
    sum(s.completed) AS completed,
    sum(s.failed) AS failed,
    sum(s.duration_samples) AS duration_samples,
    sum(s.avg_duration_ms * s.duration_samples) AS duration_sum,
    sumMap(s.duration_sketch) AS duration_sketch
FROM voicemon.stage_snapshots_latest AS s
WHERE period_type = {period_type:String}
  AND period_start >= fromUnixTimestamp({start:Int64})
  AND period_start <= fromUnixTimestamp({end:Int64})
  {where}
GROUP BY scope, organization_id, stage
"""


@dataclass(slots=True)
class SnapshotSet:
    """The rows one window produces: snapshots and stage snapshots."""

    period_type: str
    period_start_ms: int
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    stage_snapshots: list[dict[str, Any]] = field(default_factory=list)


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def artifact_metrics(row: Mapping[str, Any], exact: bool) -> dict[str, Any]:
    """Finish the §4 artifact metrics from sums (and exact percentiles or a sketch)."""
    completed, failed = int(row["artifacts_completed"]), int(row["artifacts_failed"])
    samples = int(row["latency_samples"])
    merged = {int(k): int(v) for k, v in row["latency_sketch"].items()}
    return {
        "artifacts_received": int(row["artifacts_received"]),
        "artifacts_completed": completed,
        "artifacts_failed": failed,
        "failure_rate": ratio(failed, completed + failed),
        "latency_samples": samples,
        "avg_latency_ms": ratio(float(row["latency_sum"]), samples),
        **{
            f"{name}_latency_ms": float(row[f"{name}_latency_ms"])
            if exact
            else sketch.quantile(merged, p)
            for name, p in PERCENTILES.items()
        },
        "ai_cost_usd": float(row["ai_cost_usd"]),
        "latency_sketch": merged,
    }


def stage_metrics(row: Mapping[str, Any], exact: bool) -> dict[str, Any]:
    completed, failed = int(row["completed"]), int(row["failed"])
    samples = int(row["duration_samples"])
    merged = {int(k): int(v) for k, v in row["duration_sketch"].items()}
    return {
        "started": int(row["started"]),
        "completed": completed,
        "failed": failed,
        "failure_rate": ratio(failed, completed + failed),
        "duration_samples": samples,
        "avg_duration_ms": ratio(float(row["duration_sum"]), samples),
        "p95_duration_ms": float(row["p95_duration_ms"])
        if exact
        else sketch.quantile(merged, 0.95),
        "duration_sketch": merged,
    }


EMPTY_ARTIFACTS: Mapping[str, Any] = {
    "artifacts_received": 0, "artifacts_completed": 0, "artifacts_failed": 0,
    "latency_samples": 0, "latency_sum": 0, "latency_sketch": {}, "ai_cost_usd": 0,
}  # fmt: skip
EMPTY_STAGE: Mapping[str, Any] = {
    "started": 0, "completed": 0, "failed": 0, "duration_samples": 0, "duration_sum": 0,
    "duration_sketch": {},
}  # fmt: skip


def _query(client: Client, sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=dict(parameters))
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def compute_hour(
    client: Client, hour_ms: int, stages: Sequence[str], version: int, computed_at_ms: int
) -> SnapshotSet:
    """The rows of hour ``hour_ms`` from its raw events (one query)."""
    rows = _query(client, _HOUR_SQL, {"start": hour_ms, "end": hour_ms + HOUR_MS})
    artifacts: dict[str, dict[str, Any]] = {}
    stage_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        org, stage = row["organization"], row["stage"]
        if not row["by_stage"] and (not row["by_organization"] or org):
            artifacts[org if row["by_organization"] else ""] = artifact_metrics(row, exact=True)
        elif row["by_stage"] and stage and (not row["by_organization"] or org):
            key = (org if row["by_organization"] else "", stage)
            stage_rows[key] = stage_metrics(row, exact=True)
    return assemble(
        HOURLY, hour_ms, HOUR_MS, artifacts, stage_rows, stages, version, computed_at_ms
    )


def merged_rows(
    client: Client,
    period_type: str,
    start_ms: int,
    end_ms: int,
    organization_id: str | None = None,
    *,
    artifacts: bool = True,
    stages: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """Snapshots of ``period_type`` with period_start in [start, end], merged per scope.

    Keys are organization ids ('' for the platform). With ``organization_id`` only that
    scope is read ('' for the platform alone)."""
    where = "" if organization_id is None else "AND organization_id = {org:String}"
    parameters = {
        "period_type": period_type,
        "start": start_ms // 1000,
        "end": end_ms // 1000,
        "org": organization_id or "",
    }
    merged_artifacts = {
        row["organization_id"]: artifact_metrics(row, exact=False)
        for row in (
            _query(client, MERGED_SNAPSHOT_SQL.replace("{where}", where), parameters)
            if artifacts
            else []
        )
    }
    merged_stages = {
        (row["organization_id"], row["stage"]): stage_metrics(row, exact=False)
        for row in (
            _query(client, MERGED_STAGE_SQL.replace("{where}", where), parameters) if stages else []
        )
    }
    return merged_artifacts, merged_stages


def ranked_organizations(
    client: Client, period_type: str, start_ms: int, end_ms: int, limit: int
) -> list[tuple[str, dict[str, Any]]]:
    """Organizations of the range merged, most artifacts received first (one query)."""
    sql = MERGED_SNAPSHOT_SQL.replace("{where}", "AND scope = 'organization'")
    sql += " ORDER BY artifacts_received DESC, organization_id LIMIT {limit:UInt32}"
    parameters = {"period_type": period_type, "start": start_ms // 1000, "end": end_ms // 1000,
                  "limit": limit}  # fmt: skip
    return [
        (row["organization_id"], artifact_metrics(row, exact=False))
        for row in _query(client, sql, parameters)
    ]


def compute_day(
    client: Client, day_ms: int, stages: Sequence[str], version: int, computed_at_ms: int
) -> SnapshotSet:
    """The rows of day ``day_ms`` merged from its 24 hourly rows (two queries)."""
    last_hour = day_ms + DAY_MS - HOUR_MS
    artifacts, stage_rows = merged_rows(client, HOURLY, day_ms, last_hour)
    return assemble(DAILY, day_ms, DAY_MS, artifacts, stage_rows, stages, version, computed_at_ms)


def assemble(
    period_type: str,
    start_ms: int,
    length_ms: int,
    artifacts: dict[str, dict[str, Any]],
    stage_rows: dict[tuple[str, str], dict[str, Any]],
    stages: Sequence[str],
    version: int,
    computed_at_ms: int,
) -> SnapshotSet:
    """Rows with their keys; the platform always has a row and one per configured stage."""
    artifacts.setdefault("", artifact_metrics(EMPTY_ARTIFACTS, exact=False))
    for stage in stages:
        stage_rows.setdefault(("", stage), stage_metrics(EMPTY_STAGE, exact=False))
    common = {"period_type": period_type, "period_start": utc(start_ms),
              "period_end": utc(start_ms + length_ms), "version": version,
              "computed_at": utc(computed_at_ms)}  # fmt: skip
    result = SnapshotSet(period_type, start_ms)
    for org, metrics in sorted(artifacts.items()):
        scope = ORGANIZATION if org else PLATFORM
        result.snapshots.append(common | {"scope": scope, "organization_id": org} | metrics)
    for (org, stage), metrics in sorted(stage_rows.items()):
        scope = ORGANIZATION if org else PLATFORM
        result.stage_snapshots.append(
            common | {"scope": scope, "organization_id": org, "stage": stage} | metrics
        )
    return result


def write(client: Client, snapshot_set: SnapshotSet) -> None:
    """Insert the set's rows (two inserts: snapshots, stage snapshots)."""
    for table, columns, rows in (
        ("voicemon.snapshots", SNAPSHOT_COLUMNS, snapshot_set.snapshots),
        ("voicemon.stage_snapshots", STAGE_COLUMNS, snapshot_set.stage_snapshots),
    ):
        if rows:
            data = [[row[column] for column in columns] for row in rows]
            client.insert(table, data, column_names=columns)


def message(row: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The ``voice.pipeline.snapshots`` record of a snapshot row: (key, JSON value)."""
    start = row["period_start"].isoformat().replace("+00:00", "Z")
    key = f"{row['period_type']}:{row['scope']}:{row['organization_id']}:{start}"
    value = orjson.dumps(
        {k: v for k, v in row.items()}, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
    )
    return key.encode(), value
