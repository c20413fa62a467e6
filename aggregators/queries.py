"""The snapshot-backed queries of CONTRACT §7: history and stages. Never raw events.

Each returns the snapshot rows of the range (newest version per key) and a ``summary`` that
merges them: counts summed, averages weighted by sample counts, percentiles from the
merged sketches.
"""

from __future__ import annotations

from typing import Any

from aggregators import organizations as directory
from aggregators import snapshots
from aggregators.windows import DAY_MS
from voicemon.event import parse_occurred_at
from voicemon.store import Client

MAX_ORGANIZATIONS = 1000
LATEST_TIME_MS = 4_102_444_800_000  # 2100-01-01: snapshot times are ClickHouse DateTime
MAX_RANGE_MS = {snapshots.HOURLY: 7 * DAY_MS, snapshots.DAILY: 90 * DAY_MS}


class QueryError(ValueError):
    """A query parameter is wrong; the message says which and why (an HTTP 400)."""


def parse_time(value: str | int, name: str) -> int:
    """RFC 3339 (with offset) or epoch milliseconds -> epoch ms."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
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
        hint = "use period=daily" if period == snapshots.HOURLY else "narrow the range"
        raise QueryError(f"range: longer than {MAX_RANGE_MS[period] // DAY_MS} days; {hint}")


def _rows(
    client: Client, view: str, period: str, start_ms: int, end_ms: int, org: str
) -> list[dict[str, Any]]:
    """The newest rows of ``view`` in the range, without their sketch column."""
    stage_view = view.startswith("stage")
    sketch_column, order = (
        ("duration_sketch", "period_start, stage")
        if stage_view
        else ("latency_sketch", "period_start")
    )
    result = client.query(
        f"SELECT * EXCEPT ({sketch_column}) FROM voicemon.{view} "
        "WHERE period_type = {period:String} AND organization_id = {org:String} "
        "AND period_start >= fromUnixTimestamp64Milli({start:Int64}) "
        "AND period_start <= fromUnixTimestamp64Milli({end:Int64}) "
        f"ORDER BY {order}",
        parameters={"period": period, "org": org, "start": start_ms, "end": end_ms},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _envelope(period: str, start_ms: int, end_ms: int, org: str | None) -> dict[str, Any]:
    return {
        "period": period,
        "organization_id": org,
        "start": snapshots.utc(start_ms),
        "end": snapshots.utc(end_ms),
    }


def history(
    client: Client, period: str, start_ms: int, end_ms: int, organization_id: str | None = None
) -> dict[str, Any]:
    check_range(period, start_ms, end_ms)
    org = organization_id or ""
    rows = _rows(client, "snapshots_latest", period, start_ms, end_ms, org)
    merged, _ = snapshots.merged_rows(client, period, start_ms, end_ms, org, stages=False)
    summary = merged.get(org) or snapshots.artifact_metrics(snapshots.EMPTY_ARTIFACTS, exact=False)
    summary.pop("latency_sketch")
    return _envelope(period, start_ms, end_ms, organization_id) | {"rows": rows, "summary": summary}


def stages(
    client: Client, period: str, start_ms: int, end_ms: int, organization_id: str | None = None
) -> dict[str, Any]:
    check_range(period, start_ms, end_ms)
    org = organization_id or ""
    rows = _rows(client, "stage_snapshots_latest", period, start_ms, end_ms, org)
    _, merged = snapshots.merged_rows(client, period, start_ms, end_ms, org, artifacts=False)
    summary = {}
    for (_, stage), metrics in sorted(merged.items()):
        metrics.pop("duration_sketch")
        summary[stage] = metrics
    return _envelope(period, start_ms, end_ms, organization_id) | {"rows": rows, "summary": summary}


def organizations(
    client: Client, period: str, start_ms: int, end_ms: int, limit: int = 100
) -> dict[str, Any]:
    """Per-organization volume, failures, latency and cost of the range, with names from the
    directory in one batched lookup: two store queries whatever the number of organizations."""
    check_range(period, start_ms, end_ms)
    if not 1 <= limit <= MAX_ORGANIZATIONS:
        raise QueryError(f"limit: must be between 1 and {MAX_ORGANIZATIONS}")
    ranked = snapshots.ranked_organizations(client, period, start_ms, end_ms, limit)
    names = directory.lookup(client, [org for org, _ in ranked])
    rows = []
    for org, metrics in ranked:
        metrics.pop("latency_sketch")
        rows.append({"organization_id": org, "name": names[org], **metrics})
    return _envelope(period, start_ms, end_ms, None) | {"organizations": rows}
