"""The ClickHouse cluster schema (VOICEMON_CLICKHOUSE_CLUSTER) rendered from the single-node
migrations: ON CLUSTER everywhere, a Replicated ``<table>_local`` and a Distributed table under
the contract's name for every MergeTree table, and the single-node path untouched.

The last test hands the rendered DDL to the real ClickHouse engine (chDB, in a subprocess so
that this process never opens an engine of its own): every statement must parse as written,
and, as each host of the cluster runs it (ON CLUSTER removed, as ClickHouse's DDL worker
does), create its table on a node with the cluster, the {shard}/{replica} macros and an
in-memory keeper configured.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from runtime.cli.common import settings as get_settings
from voicemon import cluster_ddl, store, store_migrations
from voicemon.settings import Settings

CLUSTER = "vm_cluster"
TABLES = ("pipeline_events", "stored_event_ids", "snapshots", "stage_snapshots", "organizations")
EXPECTED_ENGINES = {
    "pipeline_events": "ReplicatedMergeTree("
    "'/clickhouse/tables/{shard}/voicemon/pipeline_events', '{replica}')",
    "stored_event_ids": "ReplicatedMergeTree("
    "'/clickhouse/tables/{shard}/voicemon/stored_event_ids', '{replica}')",
    "snapshots": "ReplicatedReplacingMergeTree("
    "'/clickhouse/tables/{shard}/voicemon/snapshots', '{replica}', version)",
    "stage_snapshots": "ReplicatedReplacingMergeTree("
    "'/clickhouse/tables/{shard}/voicemon/stage_snapshots', '{replica}', version)",
    "organizations": "ReplicatedReplacingMergeTree("
    "'/clickhouse/tables/{shard}/voicemon/organizations', '{replica}', updated_at)",
}
SNAPSHOT_KEY = "cityHash64(period_type, scope, organization_id, period_start)"
EXPECTED_SHARDING = {
    "pipeline_events": "cityHash64(event_id)",
    "stored_event_ids": "cityHash64(event_id)",
    "snapshots": SNAPSHOT_KEY,
    "stage_snapshots": SNAPSHOT_KEY,
    "organizations": "cityHash64(organization_id)",
    "schema_migrations": "version",
}


def _flat(migrations: list[store_migrations.Migration]) -> list[str]:
    return [statement for migration in migrations for statement in migration.statements]


def _single() -> list[str]:
    return _flat(store_migrations.migrations())


def _cluster() -> list[str]:
    return _flat(store_migrations.migrations(CLUSTER))


def _created(statement: str) -> str:
    """The name a CREATE statement creates."""
    found = re.match(
        r"CREATE (?:DATABASE|TABLE|VIEW|MATERIALIZED VIEW) IF NOT EXISTS (\S+)", statement
    )
    assert found, statement
    return found.group(1)


def _by_name(statements: list[str]) -> dict[str, str]:
    creates = [statement for statement in statements if statement.startswith("CREATE")]
    named = {_created(statement): statement for statement in creates}
    assert len(named) == len(creates), "a name is created twice"
    return named


def _engine(statement: str) -> str:
    found = re.search(r"^ENGINE = (.+)$", statement, re.MULTILINE)
    assert found, statement
    return found.group(1)


def _body(statement: str) -> str:
    """The statement without its first line (the name) and its ENGINE line."""
    return re.sub(r"^ENGINE = .*$", "ENGINE", statement.split("\n", 1)[1], flags=re.MULTILINE)


def test_every_statement_is_created_on_the_cluster() -> None:
    statements = _cluster()
    assert statements
    for statement in statements:
        assert re.match(
            rf"(CREATE (DATABASE|TABLE|(MATERIALIZED )?VIEW) IF NOT EXISTS|ALTER TABLE) [\w.]+ "
            rf"ON CLUSTER {CLUSTER}\b",
            statement,
        ), statement
        assert statement.count("ON CLUSTER") == 1


def test_each_table_is_a_replicated_local_table_behind_a_distributed_table() -> None:
    named = _by_name(_cluster())
    for table in TABLES:
        local, distributed = named[f"voicemon.{table}_local"], named[f"voicemon.{table}"]
        assert _engine(local) == EXPECTED_ENGINES[table]
        assert distributed == (
            f"CREATE TABLE IF NOT EXISTS voicemon.{table} ON CLUSTER {CLUSTER} "
            f"AS voicemon.{table}_local\n"
            f"ENGINE = Distributed({CLUSTER}, voicemon, {table}_local, "
            f"{EXPECTED_SHARDING[table]})"
        )
    tables = {name for name in named if not name.endswith(("_latest", "_feed")) and "." in name}
    assert tables == {f"voicemon.{t}" for t in TABLES} | {f"voicemon.{t}_local" for t in TABLES}


def test_sharding_keys_keep_every_version_of_a_snapshot_key_on_one_shard() -> None:
    assert cluster_ddl.SHARDING_KEYS == EXPECTED_SHARDING
    key_columns = ("period_type", "scope", "organization_id", "period_start")
    for table in ("snapshots", "stage_snapshots"):
        used = re.findall(r"\w+", cluster_ddl.SHARDING_KEYS[table].removeprefix("cityHash64"))
        assert tuple(used) == key_columns  # never version or computed_at


def test_replacing_merge_tree_keeps_its_version_argument() -> None:
    single, cluster = _by_name(_single()), _by_name(_cluster())
    for table in TABLES:
        family = re.match(r"(\w+)(?:\((.*)\))?$", _engine(single[f"voicemon.{table}"]))
        assert family
        engine = _engine(cluster[f"voicemon.{table}_local"])
        assert engine.startswith(f"Replicated{family.group(1)}(")
        if family.group(2):  # ReplacingMergeTree(version) -> (..., '{replica}', version)
            assert engine.endswith(f"'{{replica}}', {family.group(2)})")


def test_columns_partition_order_ttl_and_settings_carry_over_to_the_local_tables() -> None:
    single, cluster = _by_name(_single()), _by_name(_cluster())
    for table in TABLES:
        assert _body(cluster[f"voicemon.{table}_local"]) == _body(single[f"voicemon.{table}"])
    events = cluster["voicemon.pipeline_events_local"]
    for clause in (
        "INDEX position_idx (kafka_partition, kafka_offset) TYPE minmax GRANULARITY 1",
        "PARTITION BY toStartOfHour(occurred_at)",
        "ORDER BY (toStartOfHour(occurred_at), event_type, event_id)",
        "TTL toDateTime(occurred_at) + INTERVAL 48 HOUR",
        "SETTINGS ttl_only_drop_parts = 1",
    ):
        assert clause in events
    snapshots = cluster["voicemon.snapshots_local"]
    for clause in (
        "PARTITION BY (period_type, toYYYYMMDD(period_start))",
        "ORDER BY (period_type, scope, organization_id, period_start)",
        "TTL period_start + toIntervalDay(if(period_type = 'hourly', 7, 90))",
        "SETTINGS ttl_only_drop_parts = 1",
    ):
        assert clause in snapshots


def test_views_stay_views_over_the_distributed_tables() -> None:
    named = _by_name(_cluster())
    for view in ("snapshots_latest", "stage_snapshots_latest"):
        statement = named[f"voicemon.{view}"]
        assert statement.startswith(f"CREATE VIEW IF NOT EXISTS voicemon.{view} ON CLUSTER")
        source = re.search(r"FROM (\S+) FINAL", statement)
        assert source
        assert source.group(1) == f"voicemon.{view.removesuffix('_latest')}"
        assert "Distributed(" in named[source.group(1)]


def test_everything_is_created_after_what_it_needs() -> None:
    order = [_created(statement) for statement in _cluster() if statement.startswith("CREATE")]
    assert order[0] == "voicemon"
    for table in TABLES:
        assert order.index(f"voicemon.{table}_local") < order.index(f"voicemon.{table}")
    for view in ("snapshots", "stage_snapshots"):
        assert order.index(f"voicemon.{view}") < order.index(f"voicemon.{view}_latest")


def test_the_single_node_statements_are_unchanged() -> None:
    expected = []
    folder = resources.files("voicemon.migrations")
    for name in sorted(e.name for e in folder.iterdir() if e.name.endswith(".sql")):
        lines = folder.joinpath(name).read_text().splitlines()
        text = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
        expected.append(tuple(part.strip() for part in text.split(";") if part.strip()))
    assert [m.statements for m in store_migrations.migrations()] == expected
    assert (
        store_migrations.migrations(None)
        == store_migrations.migrations()
        == store_migrations.migrations("")
    )
    for statement in _single():
        for cluster_only in ("ON CLUSTER", "_local", "Replicated", "Distributed"):
            assert cluster_only not in statement


def test_versions_and_names_are_those_of_the_single_node_migrations() -> None:
    single, cluster = store_migrations.migrations(), store_migrations.migrations(CLUSTER)
    assert [(m.version, m.name) for m in cluster] == [(m.version, m.name) for m in single]


def test_a_cluster_name_that_is_not_an_identifier_is_quoted() -> None:
    (database,) = cluster_ddl.render("CREATE DATABASE IF NOT EXISTS voicemon", "prod-eu.1")
    assert database == "CREATE DATABASE IF NOT EXISTS voicemon ON CLUSTER `prod-eu.1`"
    _, distributed = cluster_ddl.render(
        "CREATE TABLE IF NOT EXISTS voicemon.organizations (a String) ENGINE = MergeTree "
        "ORDER BY a",
        "prod-eu",
    )
    assert "ENGINE = Distributed(`prod-eu`, voicemon, organizations_local," in distributed


def test_render_covers_only_what_it_knows() -> None:
    other_engine = "CREATE TABLE IF NOT EXISTS voicemon.buffer (a String) ENGINE = Memory"
    assert cluster_ddl.render(other_engine, "c") == (
        "CREATE TABLE IF NOT EXISTS voicemon.buffer ON CLUSTER c (a String) ENGINE = Memory",
    )
    with pytest.raises(ValueError, match="SHARDING_KEYS"):
        cluster_ddl.render(
            "CREATE TABLE voicemon.new (a String) ENGINE = MergeTree ORDER BY a", "c"
        )
    with pytest.raises(ValueError, match="database"):
        cluster_ddl.render(
            "CREATE TABLE pipeline_events (a String) ENGINE = MergeTree ORDER BY a", "c"
        )
    with pytest.raises(ValueError, match="nested"):
        cluster_ddl.render(
            "CREATE TABLE voicemon.snapshots (a UInt8) ENGINE = SummingMergeTree((a)) ORDER BY a",
            "c",
        )
    with pytest.raises(ValueError, match="cannot render"):
        cluster_ddl.render("ALTER TABLE voicemon.snapshots DELETE WHERE 1", "c")
    with pytest.raises(ValueError, match="one action per ALTER"):
        cluster_ddl.render(
            "ALTER TABLE voicemon.snapshots ADD COLUMN x UInt8, ADD COLUMN y UInt8", "c"
        )
    with pytest.raises(ValueError, match="cannot render"):
        cluster_ddl.render("INSERT INTO voicemon.snapshots SELECT 1", "c")


def test_an_alter_of_a_replicated_table_reaches_its_local_tables_and_columns_both() -> None:
    column = "ALTER TABLE voicemon.organizations ADD COLUMN IF NOT EXISTS region String"
    assert cluster_ddl.render(column, CLUSTER) == (
        f"ALTER TABLE voicemon.organizations_local ON CLUSTER {CLUSTER} "
        "ADD COLUMN IF NOT EXISTS region String",
        f"ALTER TABLE voicemon.organizations ON CLUSTER {CLUSTER} "
        "ADD COLUMN IF NOT EXISTS region String",
    )
    index = (
        "ALTER TABLE voicemon.pipeline_events ADD INDEX IF NOT EXISTS t event_type "
        "TYPE set(16) GRANULARITY 4"
    )
    assert cluster_ddl.render(index, CLUSTER) == (
        f"ALTER TABLE voicemon.pipeline_events_local ON CLUSTER {CLUSTER} "
        "ADD INDEX IF NOT EXISTS t event_type TYPE set(16) GRANULARITY 4",
    )
    ttl = "ALTER TABLE voicemon.snapshots MODIFY TTL period_start + INTERVAL 1 DAY"
    assert cluster_ddl.render(ttl, CLUSTER) == (
        f"ALTER TABLE voicemon.snapshots_local ON CLUSTER {CLUSTER} "
        "MODIFY TTL period_start + INTERVAL 1 DAY",
    )
    other = "ALTER TABLE voicemon.buffer ADD COLUMN IF NOT EXISTS a String"
    assert cluster_ddl.render(other, CLUSTER) == (
        f"ALTER TABLE voicemon.buffer ON CLUSTER {CLUSTER} ADD COLUMN IF NOT EXISTS a String",
    )


def test_the_version_table_is_replicated_behind_a_distributed_table_too() -> None:
    local, distributed = store_migrations._bootstrap(CLUSTER)[1:]
    assert local.startswith(
        f"CREATE TABLE IF NOT EXISTS voicemon.schema_migrations_local ON CLUSTER {CLUSTER}"
    )
    assert _engine(local) == (
        "ReplicatedReplacingMergeTree("
        "'/clickhouse/tables/{shard}/voicemon/schema_migrations', '{replica}', applied_at)"
    )
    assert distributed.endswith(
        f"ENGINE = Distributed({CLUSTER}, voicemon, schema_migrations_local, version)"
    )
    assert store_migrations._bootstrap(None) == store_migrations._BOOTSTRAP


def test_the_setting_is_read_from_the_environment_and_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEMON_CLICKHOUSE_CLUSTER", "prod_eu")
    assert Settings().clickhouse_cluster == "prod_eu"
    monkeypatch.delenv("VOICEMON_CLICKHOUSE_CLUSTER")
    assert Settings().clickhouse_cluster is None
    for bad in ("", "two words", "x;DROP TABLE y", "a`b"):
        with pytest.raises(ValidationError, match="clickhouse_cluster"):
            Settings(clickhouse_cluster=bad)


class RecordingClient:
    """A store with no version table yet: every migration is pending."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.settings: list[object] = []

    def command(self, statement: str, parameters: object = None, settings: object = None) -> None:
        self.commands.append(statement)
        self.settings.append(settings)

    def query(self, statement: str, parameters: object = None) -> object:
        assert statement.startswith("SELECT count() FROM system.tables"), statement
        return type("Result", (), {"result_rows": [[0]]})()


def test_migrate_runs_the_cluster_form_when_the_settings_name_a_cluster() -> None:
    client = RecordingClient()
    applied = store_migrations.migrate(client, CLUSTER)
    ddl = [c for c in client.commands if not c.startswith("INSERT")]
    assert ddl == list(store_migrations._bootstrap(CLUSTER)) + _cluster()
    assert applied == [f"{m.version:04d}_{m.name}" for m in store_migrations.migrations()]
    records = [s for c, s in zip(client.commands, client.settings, strict=True) if "INSERT" in c]
    assert records == [{"insert_distributed_sync": 1}] * len(applied)
    client = RecordingClient()
    store_migrations.migrate(client, None)
    assert [c for c in client.commands if not c.startswith("INSERT")] == [
        *store_migrations._BOOTSTRAP,
        *_single(),
    ]


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
def test_migrate_print_shows_the_sql_and_connects_to_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtime.cli import app

    def no_store(dsn: str) -> None:
        raise AssertionError("migrate --print opened the store")

    monkeypatch.setattr(store, "connect", no_store)
    monkeypatch.setenv("VOICEMON_CLICKHOUSE_CLUSTER", CLUSTER)
    result = CliRunner().invoke(app, ["migrate", "--print"])
    assert result.exit_code == 0, result.output
    for statement in _cluster():
        assert f"{statement};\n" in result.output
    assert "-- 0001_database" in result.output

    monkeypatch.delenv("VOICEMON_CLICKHOUSE_CLUSTER")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["migrate", "--print"])
    assert result.exit_code == 0, result.output
    assert "ON CLUSTER" not in result.output
    for statement in _single():
        assert f"{statement};\n" in result.output


ENGINE_CONFIG = f"""<clickhouse>
  <remote_servers>
    <{CLUSTER}>
      <shard><replica><host>127.0.0.1</host><port>9000</port></replica></shard>
    </{CLUSTER}>
  </remote_servers>
  <macros><shard>01</shard><replica>replica-1</replica></macros>
  <zookeeper><implementation>testkeeper</implementation></zookeeper>
</clickhouse>
"""

# Runs in a child process: reads the statements as JSON on stdin, prints one JSON report.
ENGINE_SCRIPT = r"""
import json, os, sys
import chdb

cluster, statements, parse_only = json.load(sys.stdin)
connection = chdb.connect(":memory:?config-file=" + sys.argv[1])
cursor = connection.cursor()
report = {"unparsed": [], "failed": [], "tables": {}, "local_ddl": {}, "columns": {}}
for statement in statements:
    literal = statement.replace("\\", "\\\\").replace("'", "\\'")
    try:
        cursor.execute("SELECT formatQuery('" + literal + "')")
    except Exception as error:
        report["unparsed"].append([statement, str(error)[:300]])
    on_host = statement.replace(" ON CLUSTER " + cluster, "")
    if statement in parse_only:
        continue
    try:
        cursor.execute(on_host)
    except Exception as error:
        report["failed"].append([on_host, str(error)[:300]])
cursor.execute("SELECT name, engine FROM system.tables WHERE database = 'voicemon'")
report["tables"] = dict(cursor.fetchall())
for name in report["tables"]:
    if name.endswith("_local"):
        cursor.execute("SHOW CREATE TABLE voicemon." + name)
        report["local_ddl"][name] = cursor.fetchall()[0][0]
    cursor.execute("SELECT name FROM system.columns WHERE database = 'voicemon' AND table = '"
                   + name + "' ORDER BY position")
    report["columns"][name] = [row[0] for row in cursor.fetchall()]
print(json.dumps(report), flush=True)
os._exit(0)  # skip the embedded engine's teardown
"""


# What a later migration would do (test only): a column and a skip index, as rendered.
LATER = (
    "ALTER TABLE voicemon.organizations ADD COLUMN IF NOT EXISTS region String DEFAULT ''",
    "ALTER TABLE voicemon.pipeline_events ADD INDEX IF NOT EXISTS event_type_set event_type "
    "TYPE set(16) GRANULARITY 4",
)


def test_the_clickhouse_engine_creates_the_cluster_schema(tmp_path: Path) -> None:
    """The version table, every migration and a later column and index, as each host runs
    them."""
    config = tmp_path / "config.xml"
    config.write_text(ENGINE_CONFIG)
    later = [out for statement in LATER for out in cluster_ddl.render(statement, CLUSTER)]
    statements = [*store_migrations._bootstrap(CLUSTER), *_cluster(), *later]
    # A Replicated table stays read-only in the embedded engine (it runs no replication
    # threads), so an ALTER of a *_local table is parsed only; the Distributed one runs.
    parse_only = [
        statement
        for statement in [*_cluster(), *later]
        if statement.startswith("ALTER") and "_local ON CLUSTER" in statement
    ]
    assert len(parse_only) == 3  # the later column and index, and 0006's TTL
    done = subprocess.run(
        [sys.executable, "-c", ENGINE_SCRIPT, str(config)],
        input=json.dumps([CLUSTER, statements, parse_only]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["unparsed"] == []
    assert report["failed"] == []
    expected = {
        "snapshots_latest": "View",
        "stage_snapshots_latest": "View",
        "stored_event_ids_feed": "MaterializedView",
    }
    for table in TABLES:
        expected[table] = "Distributed"
        expected[f"{table}_local"] = EXPECTED_ENGINES[table].split("(")[0]
    expected["schema_migrations"] = "Distributed"
    expected["schema_migrations_local"] = "ReplicatedReplacingMergeTree"
    assert report["tables"] == expected
    assert report["columns"]["organizations"][-1] == "region"
    events = report["local_ddl"]["pipeline_events_local"]
    assert "TTL toDateTime(occurred_at) + toIntervalHour(48)" in events
    assert "ttl_only_drop_parts = 1" in events
    assert "INDEX position_idx" in events
    assert "'/clickhouse/tables/{shard}/voicemon/pipeline_events', '{replica}'" in events


def test_a_plain_merge_tree_setting_is_left_out_of_the_cluster_form() -> None:
    """Replicated tables deduplicate inserts by their own window; the plain table's
    ``non_replicated_deduplication_window`` means nothing there."""
    window = "non_replicated_deduplication_window"
    plain = f"ALTER TABLE voicemon.pipeline_events MODIFY SETTING {window} = 1"
    assert cluster_ddl.render(plain, CLUSTER) == ()
    other = "ALTER TABLE voicemon.pipeline_events MODIFY SETTING index_granularity_bytes = 1"
    assert cluster_ddl.render(other, CLUSTER) == (
        f"ALTER TABLE voicemon.pipeline_events_local ON CLUSTER {CLUSTER} "
        "MODIFY SETTING index_granularity_bytes = 1",
    )
