"""Versioned migrations on the real ClickHouse engine (chDB), each store in a child process
(tests/integration/migration_probe.py; a process opens one chDB path only).

- A store made by the released voicemon (the same 0001-0003, no version table) is adopted:
  its first versioned migrate records 0001-0003 (re-running them changes nothing) and keeps
  every row and every table's DDL; the next migrate applies nothing.
- New numbered migrations (a column, a skip index) reach an existing store with its rows,
  in order and recorded; an applied file edited afterwards is refused, and nothing after it
  runs.
- ``voicemon migrate`` and ``voicemon migrate --status`` say what they did and what is due.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from voicemon import store_migrations

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "voicemon" / "migrations"
NEXT = {
    "0007_organization_region.sql": "-- test only: a column with a default for existing rows\n"
    "ALTER TABLE voicemon.organizations ADD COLUMN IF NOT EXISTS region "
    "LowCardinality(String) DEFAULT 'unassigned';\n",
    "0008_event_type_index.sql": "-- test only: a skip index on a table holding rows\n"
    "ALTER TABLE voicemon.pipeline_events ADD INDEX IF NOT EXISTS event_type_set "
    "event_type TYPE set(16) GRANULARITY 4;\n",
}


def probe(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.migration_probe", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return report


def sha256(name: str) -> str:
    return hashlib.sha256((MIGRATIONS / f"{name}.sql").read_bytes()).hexdigest()


def folder(path: Path, files: dict[str, str]) -> Path:
    """This voicemon's migrations plus ``files`` (name -> text; a name present replaces)."""
    path.mkdir()
    for sql in MIGRATIONS.glob("*.sql"):
        shutil.copy(sql, path / sql.name)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_a_store_of_the_released_version_is_adopted_with_its_rows(tmp_path: Path) -> None:
    report = probe("released-store-upgrade", str(tmp_path / "store"))
    before, after = report["before"], report["after"]
    assert "schema_migrations" not in before["ddl"]  # as the released voicemon left it
    current = [m.label for m in store_migrations.migrations()]
    assert report["pending"] == current
    assert report["first"] == current  # 0001-0003 adopted (+ whatever this voicemon adds)
    assert report["second"] == []
    assert [row[:2] for row in report["records"]] == [
        [int(label[:4]), label[5:]] for label in current
    ]
    assert {row[1]: row[2] for row in report["records"]} == {
        label[5:]: sha256(label) for label in current
    }
    assert (
        before["counts"]
        == after["counts"]
        == {
            "pipeline_events": 3,
            "snapshots": 2,
            "stage_snapshots": 1,
            "organizations": 1,
        }
    )
    assert after["latest"] == [[6, 2]]  # the view still reads the newest version
    added = {"pipeline_events": ", non_replicated_deduplication_window = 1000"}  # by 0004
    ttl = "TTL toDateTime(occurred_at) + toIntervalHour(48)"  # a second more by 0006
    longer = "TTL (toDateTime(occurred_at) + toIntervalHour(48)) + toIntervalSecond(1)"
    for name, ddl in before["ddl"].items():
        wanted = ddl.replace(ttl, longer) + added.get(name, "")
        assert after["ddl"][name] == wanted, f"{name} changed while adopted"
    assert "schema_migrations" in after["ddl"]


def test_next_migrations_reach_a_store_with_rows_and_a_changed_one_is_refused(
    tmp_path: Path,
) -> None:
    following = folder(tmp_path / "next", NEXT)
    edited = (MIGRATIONS / "0003_snapshots.sql").read_text() + "-- edited after release\n"
    changed = folder(
        tmp_path / "changed",
        {
            **NEXT,
            "0003_snapshots.sql": edited,
            "0009_organization_tier.sql": "ALTER TABLE voicemon.organizations "
            "ADD COLUMN IF NOT EXISTS tier UInt8 DEFAULT 0;\n",
        },
    )
    report = probe("next-migrations", str(tmp_path / "store"), str(following), str(changed))
    assert report["base"] == [m.label for m in store_migrations.migrations()]
    assert (
        report["pending"]
        == report["applied"]
        == [
            "0007_organization_region",
            "0008_event_type_index",
        ]
    )
    rows = {"pipeline_events": 3, "snapshots": 2, "stage_snapshots": 1, "organizations": 1}
    assert report["before"]["counts"] == rows
    assert report["after"]["counts"] == rows | {"organizations": 2}  # + one with a region
    assert report["regions"] == [["acme", "unassigned"], ["globex", "eu"]]
    assert report["indexes"] == [["event_type_set", "set"], ["position_idx", "minmax"]]
    assert report["events"] == ["e2"]
    assert report["after"]["latest"] == [[6, 2]]

    assert report["refused"] == []
    assert report["refusal"] == (
        "migration 0003_snapshots.sql changed after it was applied to this store (its sha256 "
        "differs from voicemon.schema_migrations); restore the file and put the change in a "
        "new numbered one"
    )
    assert [row[0] for row in report["records"]] == [1, 2, 3, 4, 5, 6, 7, 8]  # 0009 never ran
    assert "tier" not in report["organization_columns"]
    assert "region" in report["organization_columns"]


def voicemon(store_path: Path, *args: str) -> str:
    env = {**os.environ, "VOICEMON_CLICKHOUSE_DSN": f"chdb://{store_path}"}
    env.pop("VOICEMON_CLICKHOUSE_CLUSTER", None)
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


def test_the_migrate_command_says_what_it_applied_and_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "store"
    current = [m.label for m in store_migrations.migrations()]
    latest = f"{store_migrations.migrations()[-1].version:04d}"
    assert voicemon(path, "migrate", "--status").split() == [
        word for label in current for word in ("pending", label)
    ]
    first = voicemon(path, "migrate").splitlines()
    assert first == [f"applied {label}" for label in current] + [f"schema at version {latest}"]
    assert voicemon(path, "migrate").splitlines() == [
        f"schema at version {latest}, nothing to apply"
    ]
    status = voicemon(path, "migrate", "--status").splitlines()
    assert [line.split()[:2] for line in status] == [["applied", label] for label in current]
