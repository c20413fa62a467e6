"""Versioned migrations without a store: the plan (pure), the rules every file keeps, and what
``migrate`` and ``voicemon migrate`` do with a store's record. The same on the real engine,
from a store of the released version on: tests/integration/test_migrations.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from runtime.cli.common import settings as get_settings
from voicemon import store, store_migrations

# A migration applied anywhere never changes: its sha256 is recorded in every store it
# reached, and a changed file is refused there. Add a new numbered file instead.
RELEASED = {
    "0001_database": "3723ad23df4966cb7833a4973aefe4e1d4ab1f6ec12d9c35d77a11001a318431",
    "0002_pipeline_events": "93a72aac47aa9d95966d6381df84c954590cb9c165f14fbb7e0e9b6a0b05abbc",
    "0003_snapshots": "e8bf2628d7b14a3d97250ec9a57292dfda7d90ad578962de2c727aad9a9ce749",
    "0004_raw_insert_deduplication": (
        "fdd4771ed8d696d67d64739362029219ec231213753444e7ded7b067473a2491"
    ),
}

# ClickHouse DDL has no transactions: a migration cut short, or run by two processes at once,
# is run again from its first statement, so each statement must be safe to repeat.
IDEMPOTENT = re.compile(
    r"^(CREATE (DATABASE|TABLE|VIEW|MATERIALIZED VIEW) IF NOT EXISTS "
    r"|ALTER TABLE [\w.]+ (ADD (COLUMN|INDEX|PROJECTION) IF NOT EXISTS "
    r"|(DROP|MODIFY|COMMENT|CLEAR) (COLUMN|INDEX|PROJECTION) IF EXISTS "
    r"|MODIFY (TTL|SETTING|COMMENT) |MATERIALIZE (INDEX|PROJECTION|TTL)\b)"
    r"|DROP (TABLE|VIEW|DATABASE) IF EXISTS )"
)


def test_released_migrations_are_unchanged() -> None:
    files = {m.label: m.checksum for m in store_migrations.migrations()}
    assert {label: files.get(label) for label in RELEASED} == RELEASED


def test_files_are_numbered_in_order_from_one_without_gaps() -> None:
    names = sorted(p.name for p in store_migrations.MIGRATIONS.iterdir() if p.name.endswith(".sql"))
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", name) for name in names), names
    assert [m.version for m in store_migrations.migrations()] == list(range(1, len(names) + 1))


def test_every_statement_can_be_run_twice() -> None:
    for migration in store_migrations.migrations():
        for statement in migration.statements:
            assert IDEMPOTENT.match(statement), f"{migration.label}: {statement[:80]!r}"


def test_the_checksum_is_the_sha256_of_the_file() -> None:
    migration = store_migrations.parse("0007_x.sql", b"-- why\nCREATE DATABASE IF NOT EXISTS v;\n")
    assert (migration.version, migration.name, migration.label) == (7, "x", "0007_x")
    assert migration.statements == ("CREATE DATABASE IF NOT EXISTS v",)
    assert migration.checksum == (
        "4d9b26b063cdba1223f17f29a46725a89b7fbe2dd9e10e8b5cd14f219a03be46"  # sha256sum of it
    )
    # A comment counts: any edit of an applied file is a change.
    assert store_migrations.parse("0007_x.sql", b"CREATE DATABASE IF NOT EXISTS v;\n").checksum != (
        migration.checksum
    )


def test_two_files_with_one_number_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE DATABASE IF NOT EXISTS a")
    (tmp_path / "0001_b.sql").write_text("CREATE DATABASE IF NOT EXISTS b")
    with pytest.raises(store_migrations.MigrationError, match="two migrations are numbered 0001"):
        store_migrations.migrations(folder=tmp_path)


@pytest.mark.parametrize(
    "name", ["0005.sql", "five_x.sql", "0005-x.sql", "0005_x.SQL.bak", "_x.sql", "0005_.sql",
             "0005_x y.sql", "1234567890_x.sql"],
)  # fmt: skip
def test_a_file_name_that_does_not_parse_is_one_sentence(tmp_path: Path, name: str) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE DATABASE IF NOT EXISTS a")
    (tmp_path / name).write_text("CREATE DATABASE IF NOT EXISTS b")
    if not name.endswith(".sql"):
        assert [m.name for m in store_migrations.migrations(folder=tmp_path)] == [
            "a"
        ]  # not a migration
        return
    with pytest.raises(store_migrations.MigrationError, match=r"is not named NNNN_what\.sql"):
        store_migrations.migrations(folder=tmp_path)


def test_names_that_parse_and_a_file_that_is_not_utf8() -> None:
    assert store_migrations.parse("7_x.sql", b"").version == 7
    assert store_migrations.parse("123456789_a.b-c.sql", b"").name == "a.b-c"
    with pytest.raises(store_migrations.MigrationError, match="not UTF-8"):
        store_migrations.parse("0007_x.sql", "CREATE TABLE é".encode("latin-1"))


def _migration(version: int, checksum: str = "c") -> store_migrations.Migration:
    return store_migrations.Migration(version, f"m{version}", (f"-- {version}",), checksum)


def _applied(version: int, checksum: str = "c", name: str = "") -> store_migrations.Applied:
    return store_migrations.Applied(
        version, name or f"m{version}", checksum, "2026-11-29 00:00:00.000"
    )


def test_the_plan_is_what_is_pending_in_order_what_changed_and_what_is_unknown() -> None:
    files = [_migration(1), _migration(2, "new"), _migration(3), _migration(4)]
    plan = store_migrations.plan(files, [_applied(2, "old"), _applied(1), _applied(9)])
    assert plan.pending == (files[2], files[3])
    assert plan.changed == (files[1],)
    assert plan.unknown == (_applied(9),)
    assert (
        store_migrations.plan(files, [_applied(v) for v in (1, 2, 3, 4)]).pending == ()
    )  # no re-run
    assert store_migrations.plan(files, []).pending == tuple(files)


class RecordedStore:
    """The store's record as ClickHouse would answer it (the real engine:
    tests/integration/test_migrations.py)."""

    def __init__(self, rows: list[store_migrations.Applied] | None = None) -> None:
        self.rows = list(rows or [])
        self.has_table = rows is not None
        self.commands: list[str] = []

    def command(self, statement: str, parameters: Any = None, settings: Any = None) -> None:
        self.commands.append(statement)
        if statement.startswith(f"CREATE TABLE IF NOT EXISTS {store_migrations.VERSION_TABLE}"):
            self.has_table = True
        if statement.startswith(f"INSERT INTO {store_migrations.VERSION_TABLE}"):
            p = parameters
            self.rows.append(
                store_migrations.Applied(p["version"], p["name"], p["checksum"], "now")
            )

    def query(self, statement: str, parameters: Any = None) -> Any:
        if "system.tables" in statement:
            rows: list[list[Any]] = [[int(self.has_table)]]
        else:
            rows = [[r.version, r.name, r.checksum, r.applied_at] for r in self.rows]
        return type("Result", (), {"result_rows": rows})()


def test_migrate_applies_the_pending_files_in_order_and_records_each(tmp_path: Path) -> None:
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE IF NOT EXISTS v.b (a UInt8) ENGINE = Log")
    (tmp_path / "0001_a.sql").write_text("CREATE DATABASE IF NOT EXISTS v")
    client = RecordedStore()
    assert store_migrations.migrate(client, folder=tmp_path) == ["0001_a", "0002_b"]
    ddl = [
        c
        for c in client.commands
        if not c.startswith(
            (
                "INSERT",
                "CREATE DATABASE IF NOT EXISTS voicemon",
                f"CREATE TABLE IF NOT EXISTS {store_migrations.VERSION_TABLE}",
            )
        )
    ]
    assert ddl == [
        "CREATE DATABASE IF NOT EXISTS v",
        "CREATE TABLE IF NOT EXISTS v.b (a UInt8) ENGINE = Log",
    ]
    assert [(r.version, r.name) for r in client.rows] == [(1, "a"), (2, "b")]
    assert [r.checksum for r in client.rows] == [
        m.checksum for m in store_migrations.migrations(folder=tmp_path)
    ]
    client.commands.clear()
    assert store_migrations.migrate(client, folder=tmp_path) == []
    assert not any(
        c.startswith(("INSERT", "CREATE DATABASE IF NOT EXISTS v\n")) for c in client.commands
    )


def test_a_changed_applied_migration_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE DATABASE IF NOT EXISTS v")
    (tmp_path / "0002_b.sql").write_text("CREATE DATABASE IF NOT EXISTS w")
    client = RecordedStore([_applied(1, "recorded before the file was edited")])
    with pytest.raises(store_migrations.MigrationError) as refused:
        store_migrations.migrate(client, folder=tmp_path)
    assert str(refused.value) == (
        "migration 0001_a.sql changed after it was applied to this store (its sha256 differs "
        "from voicemon.schema_migrations); restore the file and put the change in a new "
        "numbered one"
    )
    assert "CREATE DATABASE IF NOT EXISTS w" not in client.commands
    assert len(client.rows) == 1


@pytest.fixture
def cli_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedStore]:
    client = RecordedStore()
    monkeypatch.setattr(store, "connect", lambda dsn: client)
    monkeypatch.delenv("VOICEMON_CLICKHOUSE_CLUSTER", raising=False)
    get_settings.cache_clear()
    yield client
    get_settings.cache_clear()


def test_the_command_refuses_a_changed_migration_in_one_sentence(cli_store: RecordedStore) -> None:
    from runtime.cli import app

    cli_store.rows = [
        _applied(1, "edited", "database"),
        _applied(2, RELEASED["0002_pipeline_events"], "pipeline_events"),
    ]
    cli_store.has_table = True
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: migration 0001_database.sql changed after it was applied" in result.output
    assert "Traceback" not in result.output

    result = CliRunner().invoke(app, ["migrate", "--status"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("applied 0001_database  2026-11-29 00:00:00.000 [changed since]")
    assert lines[1].startswith("applied 0002_pipeline_events  2026-11-29")
    assert "pending 0003_snapshots" in lines


def test_the_command_reports_what_it_applied(cli_store: RecordedStore) -> None:
    from runtime.cli import app

    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    labels = [m.label for m in store_migrations.migrations()]
    latest = f"{store_migrations.migrations()[-1].version:04d}"
    assert result.output.splitlines() == [f"applied {label}" for label in labels] + [
        f"schema at version {latest}"
    ]
    result = CliRunner().invoke(app, ["migrate"])
    assert result.output.splitlines() == [f"schema at version {latest}, nothing to apply"]
