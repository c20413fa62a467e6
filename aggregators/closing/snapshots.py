"""Hourly and daily snapshots (CONTRACT §4, §6) computed in ClickHouse and written back.

An hour is computed from its raw events (``snapshot_sql.HOUR_SQL``); a day is merged from its
24 hourly rows. The rows themselves are assembled by the pure ``snapshot_rows`` module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aggregators.snapshot_reads import merged_rows, rows_of
from aggregators.snapshot_rows import (
    DAILY,
    HOURLY,
    SNAPSHOT_COLUMNS,
    STAGE_COLUMNS,
    ArtifactMetrics,
    SnapshotSet,
    StageMetrics,
    artifact_metrics,
    from_message,
    snapshot_rows,
    stage_metrics,
)
from aggregators.snapshot_sql import HOUR_SQL
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS


def compute_hour(
    client: Client, hour_ms: int, stages: Sequence[str], version: int, computed_at_ms: int
) -> SnapshotSet:
    """The rows of hour ``hour_ms`` from its raw events (one query)."""
    rows = rows_of(client, HOUR_SQL, {"start": hour_ms, "end": hour_ms + HOUR_MS})
    artifacts: dict[str, ArtifactMetrics] = {}
    stage_rows: dict[tuple[str, str], StageMetrics] = {}
    for row in rows:
        org = row["organization"] if row["by_organization"] else ""
        if row["by_organization"] and not org:
            continue  # the GROUPING SETS row of events without an organization
        if not row["by_stage"]:
            artifacts[org] = artifact_metrics(row, exact=True)
        elif row["stage"]:
            stage_rows[org, row["stage"]] = stage_metrics(row, exact=True)
    return snapshot_rows(
        HOURLY, hour_ms, HOUR_MS, artifacts, stage_rows, stages, version, computed_at_ms
    )


def compute_day(
    client: Client, day_ms: int, stages: Sequence[str], version: int, computed_at_ms: int
) -> SnapshotSet:
    """The rows of day ``day_ms`` merged from its 24 hourly rows (two queries)."""
    last_hour = day_ms + DAY_MS - HOUR_MS
    artifacts, stage_rows = merged_rows(client, HOURLY, day_ms, last_hour)
    return snapshot_rows(
        DAILY, day_ms, DAY_MS, artifacts, stage_rows, stages, version, computed_at_ms
    )


def write(client: Client, snapshot_set: SnapshotSet) -> None:
    """Insert the set's rows (two inserts: snapshots, stage snapshots)."""
    tables: tuple[tuple[str, tuple[str, ...], Sequence[Any]], ...] = (
        ("voicemon.snapshots", SNAPSHOT_COLUMNS, snapshot_set.snapshots),
        ("voicemon.stage_snapshots", STAGE_COLUMNS, snapshot_set.stage_snapshots),
    )
    for table, columns, rows in tables:
        if rows:
            data = [[getattr(row, column) for column in columns] for row in rows]
            client.insert(table, data, column_names=columns)


def write_records(client: Client, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Write the rows that snapshot ``records`` (one window's, one version) carry, into each
    table that does not hold them yet: a kept record is written at most once however often
    a closer dies around its write."""
    decoded = [from_message(value) for _, value in records]
    if not decoded:
        return
    first = decoded[0][0]
    rows = SnapshotSet(first.period_type, int(first.period_start.timestamp() * 1000))
    for row, stage_rows in decoded:
        rows.snapshots.append(row)
        rows.stage_snapshots.extend(stage_rows)
    parameters = {"p": first.period_type, "s": rows.period_start_ms, "v": first.version}
    for table, held in (("snapshots", rows.snapshots), ("stage_snapshots", rows.stage_snapshots)):
        found = client.query(
            f"SELECT count() FROM voicemon.{table} WHERE period_type = {{p:String}} "
            "AND period_start = fromUnixTimestamp64Milli({s:Int64}) AND version = {v:UInt64}",
            parameters=parameters,
        ).result_rows[0][0]
        if found:
            held.clear()  # one insert per table: all of its rows are there
    write(client, rows)


def exists(client: Client, period_type: str, start_ms: int) -> bool:
    """Whether the window starting at ``start_ms`` has a snapshot already."""
    found = client.query(
        "SELECT count() FROM voicemon.snapshots WHERE period_type = {p:String} "
        "AND scope = 'platform' AND period_start = fromUnixTimestamp64Milli({s:Int64})",
        parameters={"p": period_type, "s": start_ms},
    )
    return bool(found.result_rows[0][0])
