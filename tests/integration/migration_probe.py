"""Runs one migration scenario on its own embedded store and prints a JSON report.

A process can open one chDB path only, and the test process has its own: so
tests/integration/test_migrations.py runs each scenario here, in a child process:

    python -m tests.integration.migration_probe released-store-upgrade PATH
    python -m tests.integration.migration_probe next-migrations PATH NEXT CHANGED

``released-store-upgrade``: a store made the way the released voicemon made it (every
statement of 0001-0003, ``IF NOT EXISTS``, nothing recorded), with rows in every table, then
migrated by this voicemon, twice. ``next-migrations``: a store migrated by this voicemon and
holding rows, then given the migrations of folder NEXT (this voicemon's files plus new
numbered ones), then those of folder CHANGED (an applied file edited, and one more new file).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from voicemon import store, store_migrations

TABLES = ("pipeline_events", "snapshots", "stage_snapshots", "organizations")
RELEASED = (1, 2, 3)  # the migrations of the released voicemon, which recorded nothing


def released_migrate(client: store.Client) -> None:
    """The released ``migrate``: run every statement of every file, record nothing."""
    for migration in store_migrations.migrations():
        if migration.version in RELEASED:
            for statement in migration.statements:
                client.command(statement)


def write_rows(client: store.Client) -> None:
    """Rows in every table, at times inside their TTLs."""
    now = datetime.now(UTC).replace(microsecond=0)
    hour = now.replace(minute=0, second=0) - timedelta(hours=1)
    client.command(
        "INSERT INTO voicemon.pipeline_events (event_id, event_type, occurred_at, artifact_id, "
        "organization_id, stage, duration_ms, ai_cost_usd, error_code, schema_version, "
        "kafka_partition, kafka_offset, batch_index, ingested_at) VALUES "
        "('e1', 'artifact_received', {t:DateTime64(3)}, 'a1', 'acme', NULL, NULL, NULL, NULL, "
        "1, 0, 10, 0, {t:DateTime64(3)}), "
        "('e2', 'stage_completed', {t:DateTime64(3)}, 'a1', 'acme', 'transcription', 1500, 0.02, "
        "NULL, 1, 0, 11, 0, {t:DateTime64(3)}), "
        "('e3', 'artifact_completed', {t:DateTime64(3)}, 'a1', 'acme', NULL, 9000, NULL, NULL, "
        "1, 1, 7, 0, {t:DateTime64(3)})",
        parameters={"t": now},
    )
    for version, received in ((1, 5), (2, 6)):  # two versions of one key; the view keeps 2
        client.command(
            "INSERT INTO voicemon.snapshots (period_type, scope, organization_id, period_start, "
            "period_end, artifacts_received, artifacts_completed, artifacts_failed, "
            "failure_rate, latency_samples, avg_latency_ms, p50_latency_ms, p95_latency_ms, "
            "p99_latency_ms, ai_cost_usd, latency_sketch, version, computed_at) VALUES "
            "('hourly', 'platform', '', {h:DateTime}, {h:DateTime} + 3600, {r:UInt64}, 4, 1, "
            "0.2, 4, 10.5, 9, 20, 30, 0.5, map(100, 4), {v:UInt64}, {t:DateTime64(3)})",
            parameters={"h": hour, "r": received, "v": version, "t": now},
        )
    client.command(
        "INSERT INTO voicemon.stage_snapshots (period_type, scope, organization_id, "
        "period_start, stage, period_end, started, completed, failed, failure_rate, "
        "duration_samples, avg_duration_ms, p95_duration_ms, duration_sketch, version, "
        "computed_at) VALUES ('hourly', 'platform', '', {h:DateTime}, 'transcription', "
        "{h:DateTime} + 3600, 3, 2, 1, 0.33, 2, 1500, 1500, map(90, 2), 1, {t:DateTime64(3)})",
        parameters={"h": hour, "t": now},
    )
    client.command(
        "INSERT INTO voicemon.organizations (organization_id, name, updated_at) "
        "VALUES ('acme', 'Acme Voice', {t:DateTime64(3)})",
        parameters={"t": now},
    )


def snapshot(client: store.Client) -> dict[str, Any]:
    """What a migration must keep: every table's DDL and rows, and what the views read."""
    ddl = dict(
        client.query(
            "SELECT name, create_table_query FROM system.tables WHERE database = 'voicemon'"
        ).result_rows
    )
    count = "SELECT count() FROM voicemon.{}"
    counts = {t: client.query(count.format(t)).result_rows[0][0] for t in TABLES}
    latest = client.query(
        "SELECT artifacts_received, version FROM voicemon.snapshots_latest"
    ).result_rows
    return {"ddl": ddl, "counts": counts, "latest": [list(row) for row in latest]}


def records(client: store.Client) -> list[list[Any]]:
    return [[r.version, r.name, r.checksum] for r in store_migrations.applied(client)]


def released_store_upgrade(client: store.Client) -> dict[str, Any]:
    released_migrate(client)
    write_rows(client)
    before = snapshot(client)
    pending = [m.label for m in store_migrations.status(client).pending]
    first = store_migrations.migrate(client)
    second = store_migrations.migrate(client)
    return {
        "before": before,
        "pending": pending,
        "first": first,
        "second": second,
        "after": snapshot(client),
        "records": records(client),
    }


def next_migrations(client: store.Client, following: Path, changed: Path) -> dict[str, Any]:
    base = store_migrations.migrate(client)
    write_rows(client)
    before = snapshot(client)
    pending = [m.label for m in store_migrations.status(client, folder=following).pending]
    applied = store_migrations.migrate(client, folder=following)
    client.command(
        "INSERT INTO voicemon.organizations (organization_id, name, updated_at, region) "
        "VALUES ('globex', 'Globex', now64(3), 'eu')"
    )
    regions = client.query(
        "SELECT organization_id, region FROM voicemon.organizations FINAL ORDER BY 1"
    ).result_rows
    indexes = client.query(
        "SELECT name, type FROM system.data_skipping_indices "
        "WHERE database = 'voicemon' AND table = 'pipeline_events' ORDER BY name"
    ).result_rows
    events = client.query(
        "SELECT event_id FROM voicemon.pipeline_events WHERE event_type = 'stage_completed'"
    ).result_rows
    after = snapshot(client)
    try:
        refused = store_migrations.migrate(client, folder=changed)
        refusal = None
    except store_migrations.MigrationError as error:
        refused, refusal = [], str(error)
    columns = client.query(
        "SELECT name FROM system.columns WHERE database = 'voicemon' AND table = 'organizations'"
    ).result_rows
    return {
        "base": base,
        "before": before,
        "pending": pending,
        "applied": applied,
        "regions": [list(row) for row in regions],
        "indexes": [list(row) for row in indexes],
        "events": [row[0] for row in events],
        "after": after,
        "refused": refused,
        "refusal": refusal,
        "records": records(client),
        "organization_columns": [row[0] for row in columns],
    }


def main(argv: list[str]) -> None:
    scenario, path, *folders = argv
    client = store.connect(f"chdb://{path}")
    if scenario == "released-store-upgrade":
        report = released_store_upgrade(client)
    else:
        report = next_migrations(client, Path(folders[0]), Path(folders[1]))
    print(orjson.dumps(report, default=str).decode(), flush=True)
    os._exit(0)  # skip the embedded engine's teardown


if __name__ == "__main__":
    main(sys.argv[1:])
