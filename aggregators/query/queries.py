"""The snapshot-backed queries of CONTRACT §7: history, stages, organizations. Never raw events.

Each returns the snapshot rows of the range (newest version per key) and a summary that
merges them: counts summed, averages weighted by sample counts, percentiles from the
merged sketches. The range is ``period_start`` in [start, end], to the millisecond.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aggregators.directory import organizations as directory
from aggregators.snapshot_reads import merged_rows, rows_of
from aggregators.snapshot_rows import (
    DAILY,
    HOURLY,
    SNAPSHOT_COLUMNS,
    STAGE_COLUMNS,
    ArtifactMetrics,
    artifact_metrics,
    no_artifacts,
    public,
)
from aggregators.snapshot_sql import MERGED_SNAPSHOT_SQL
from voicemon.event import parse_occurred_at
from voicemon.store import Client
from voicemon.windows import DAY_MS, utc

MAX_ORGANIZATIONS = 1000
LATEST_TIME_MS = 4_102_444_800_000  # 2100-01-01: snapshot times are ClickHouse DateTime
MAX_RANGE_MS = {HOURLY: 7 * DAY_MS, DAILY: 90 * DAY_MS}


_EPOCH_MS = re.compile(r"-?[0-9]+")  # ASCII digits only: int() also reads other scripts'


class QueryError(ValueError):
    """A query parameter is wrong; the message says which and why (an HTTP 400)."""


def parse_time(value: str | int, name: str) -> int:
    """RFC 3339 (with offset) or epoch milliseconds -> epoch ms."""
    if isinstance(value, str) and _EPOCH_MS.fullmatch(value.strip()):
        value = int(value)
    parsed = parse_occurred_at(value) if isinstance(value, str | int) else None
    if parsed is None:
        raise QueryError(f"{name}: expected an RFC 3339 time with offset or epoch milliseconds")
    if not 0 <= parsed < LATEST_TIME_MS:
        raise QueryError(f"{name}: must lie between 1970 and 2100")
    return parsed


def check_range(period: str, start_ms: int, end_ms: int) -> None:
    if period not in MAX_RANGE_MS:
        raise QueryError("period: must be 'hourly' or 'daily'")
    if start_ms > end_ms:
        raise QueryError("start: must not be after end")
    if end_ms - start_ms > MAX_RANGE_MS[period]:
        hint = "use period=daily" if period == HOURLY else "narrow the range"
        raise QueryError(f"range: longer than {MAX_RANGE_MS[period] // DAY_MS} days; {hint}")


def ranked_organizations(
    client: Client, period_type: str, start_ms: int, end_ms: int, limit: int
) -> list[tuple[str, ArtifactMetrics]]:
    """Organizations of the range merged, most artifacts received first (one query)."""
    sql = MERGED_SNAPSHOT_SQL.replace("{where}", "AND scope = 'organization'")
    sql += " ORDER BY artifacts_received DESC, organization_id LIMIT {limit:UInt32}"
    parameters = {"period_type": period_type, "start": start_ms, "end": end_ms, "limit": limit}
    return [
        (row["organization_id"], artifact_metrics(row, exact=False))
        for row in rows_of(client, sql, parameters)
    ]


def _rows(
    client: Client, view: str, columns: tuple[str, ...], order: str, period: str,
    start_ms: int, end_ms: int, org: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """The newest rows of ``view`` in the range, as the query surface shows them (CONTRACT
    §7): times are UTC (RFC 3339 with ``Z`` once serialized), a platform row's
    ``organization_id`` is null."""
    shown = ", ".join(column for column in columns if not column.endswith("_sketch"))
    rows = rows_of(
        client,
        f"SELECT {shown} FROM voicemon.{view} "
        "WHERE period_type = {period:String} AND organization_id = {org:String} "
        "AND period_start >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND period_start <= fromUnixTimestamp64Milli({end:Int64}) "
        f"ORDER BY {order}",
        {"period": period, "org": org, "start": start_ms, "end": end_ms},
    )
    for row in rows:
        row["organization_id"] = row["organization_id"] or None
        for name, value in row.items():
            if isinstance(value, datetime) and value.tzinfo is None:
                row[name] = value.replace(tzinfo=UTC)
    return rows


def _envelope(period: str, start_ms: int, end_ms: int, org: str | None) -> dict[str, Any]:
    return {"period": period, "organization_id": org, "start": utc(start_ms), "end": utc(end_ms)}


def history(
    client: Client, period: str, start_ms: int, end_ms: int, organization_id: str | None = None
) -> dict[str, Any]:
    check_range(period, start_ms, end_ms)
    org = organization_id or ""
    rows = _rows(client, "snapshots_latest", SNAPSHOT_COLUMNS, "period_start", period,
                 start_ms, end_ms, org)  # fmt: skip
    merged, _ = merged_rows(client, period, start_ms, end_ms, org, stages=False)
    summary = public(merged.get(org) or no_artifacts())
    return _envelope(period, start_ms, end_ms, organization_id) | {"rows": rows, "summary": summary}


def stages(
    client: Client, period: str, start_ms: int, end_ms: int, organization_id: str | None = None
) -> dict[str, Any]:
    check_range(period, start_ms, end_ms)
    org = organization_id or ""
    rows = _rows(client, "stage_snapshots_latest", STAGE_COLUMNS, "period_start, stage",
                 period, start_ms, end_ms, org)  # fmt: skip
    _, merged = merged_rows(client, period, start_ms, end_ms, org, artifacts=False)
    summary = {stage: public(metrics) for (_, stage), metrics in sorted(merged.items())}
    return _envelope(period, start_ms, end_ms, organization_id) | {"rows": rows, "summary": summary}


def organizations(
    client: Client, period: str, start_ms: int, end_ms: int, limit: int = 100
) -> dict[str, Any]:
    """Per-organization volume, failures, latency and cost of the range, with names from the
    directory in one batched lookup: two store queries whatever the number of organizations."""
    check_range(period, start_ms, end_ms)
    if not 1 <= limit <= MAX_ORGANIZATIONS:
        raise QueryError(f"limit: must be between 1 and {MAX_ORGANIZATIONS}")
    ranked = ranked_organizations(client, period, start_ms, end_ms, limit)
    names = directory.lookup(client, [org for org, _ in ranked])
    rows = [
        {"organization_id": org, "name": names[org], **public(metrics)} for org, metrics in ranked
    ]
    return _envelope(period, start_ms, end_ms, None) | {"organizations": rows}
