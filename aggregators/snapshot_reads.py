"""Reading the snapshot tables: rows as dicts, and snapshots merged per scope over a range.
Shared by the daily close (a day from its hours) and the queries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aggregators.snapshot_rows import ArtifactMetrics, StageMetrics, artifact_metrics, stage_metrics
from aggregators.snapshot_sql import MERGED_SNAPSHOT_SQL, MERGED_STAGE_SQL
from voicemon.store import Client


def rows_of(client: Client, sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of one query as dicts keyed by column name."""
    result = client.query(sql, parameters=dict(parameters))
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def merged_rows(
    client: Client,
    period_type: str,
    start_ms: int,
    end_ms: int,
    organization_id: str | None = None,
    *,
    artifacts: bool = True,
    stages: bool = True,
) -> tuple[dict[str, ArtifactMetrics], dict[tuple[str, str], StageMetrics]]:
    """Snapshots of ``period_type`` with period_start in [start, end], merged per scope.

    Keys are organization ids ('' for the platform). With ``organization_id`` only that
    scope is read ('' for the platform alone)."""
    where = "" if organization_id is None else "AND organization_id = {org:String}"
    parameters = {"period_type": period_type, "start": start_ms, "end": end_ms,
                  "org": organization_id or ""}  # fmt: skip
    merged_artifacts = {
        row["organization_id"]: artifact_metrics(row, exact=False)
        for row in (
            rows_of(client, MERGED_SNAPSHOT_SQL.replace("{where}", where), parameters)
            if artifacts
            else []
        )
    }
    merged_stages = {
        (row["organization_id"], row["stage"]): stage_metrics(row, exact=False)
        for row in (
            rows_of(client, MERGED_STAGE_SQL.replace("{where}", where), parameters)
            if stages
            else []
        )
    }
    return merged_artifacts, merged_stages
