"""The ClickHouse store: one client factory and the numbered migrations.

``chdb:///path`` opens the embedded engine in this process (one process owns a data path);
``http://user:pass@host:8123/voicemon`` reaches a ClickHouse server with the same SQL.

The single-node ``.sql`` files are the only schema source. With ``VOICEMON_CLICKHOUSE_CLUSTER``
set, ``render`` derives the cluster form of each statement with three rules instead of a
second set of files that could drift from the first: every CREATE gets ``ON CLUSTER``; a
``*MergeTree`` table becomes ``<name>_local`` with the Replicated engine of its family (the
family's own arguments, e.g. ReplacingMergeTree's version column, follow the ZooKeeper path
and replica) and everything after the engine (PARTITION BY, ORDER BY, TTL, SETTINGS) kept;
and a ``Distributed`` table ``AS`` the local one takes the contract's name, so every query,
insert and view keeps working unchanged. Each such table's sharding key is in
``SHARDING_KEYS``; a new table without one fails loudly instead of getting a guessed key.
An ``ALTER TABLE`` of such a table goes to ``<name>_local`` ON CLUSTER, and a column change
to the Distributed table as well, so that both keep the same columns.

Migrations are versioned: ``voicemon.schema_migrations`` records each applied file (version,
name, sha256 of the file, when), ``migrate`` applies the pending files in order and records
each, and refuses to run when an applied file has changed since. Every statement is
idempotent (``IF NOT EXISTS`` / ``IF EXISTS``): ClickHouse DDL has no transactions, so a
migration interrupted half-way, or run by two processes at once, is simply run again. A store
made before the version table (every statement of 0001-0003 was ``IF NOT EXISTS``) is adopted
the same way: its first versioned migrate re-runs 0001-0003, which change nothing, records
them and applies what follows.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect

log = logging.getLogger(__name__)

Client = Any  # clickhouse_connect ships no type information for its client classes


class StoreError(Exception):
    """The store could not be opened or migrated. Operator action: check VOICEMON_CLICKHOUSE_DSN."""


class MigrationError(StoreError):
    """The store's recorded migrations disagree with this voicemon's files."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str = ""  # sha256 of the file, as recorded in voicemon.schema_migrations

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class Applied:
    """One row of voicemon.schema_migrations."""

    version: int
    name: str
    checksum: str
    applied_at: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What a store needs: its files not yet applied, in order, and what disagrees."""

    pending: tuple[Migration, ...]
    changed: tuple[Migration, ...]  # applied, but the file's checksum differs from the record
    unknown: tuple[Applied, ...]  # applied by a newer voicemon: this one has no such file


def connect(dsn: str) -> Client:
    """Open a client for ``dsn``; the message of a failure never contains the DSN's secret."""
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except ImportError:
        raise StoreError(
            "the embedded chDB store needs the embedded extra, which this install lacks: "
            "install voicemon[embedded] (or the embedded image), or point "
            "VOICEMON_CLICKHOUSE_DSN at a ClickHouse server"
        ) from None
    except Exception as error:  # the driver raises many types; none may leak the DSN
        kind = "embedded chDB" if dsn.startswith("chdb:") else "ClickHouse server"
        raise StoreError(f"cannot open the {kind} store: {redact(str(error), dsn)}") from None


def redact(text: str, dsn: str) -> str:
    """``text`` without the password of ``dsn``."""
    password = urlsplit(dsn).password
    return text.replace(password, "***") if password else text


# Where the rows of each replicated table live. Every version of one snapshot key must land
# on one shard, so that FINAL in the *_latest views (run per shard) keeps exactly the newest.
SHARDING_KEYS = {
    "pipeline_events": "cityHash64(event_id)",
    "snapshots": "cityHash64(period_type, scope, organization_id, period_start)",
    "stage_snapshots": "cityHash64(period_type, scope, organization_id, period_start)",
    "organizations": "cityHash64(organization_id)",
    "schema_migrations": "version",
}

_CREATE = re.compile(
    r"^(?P<head>CREATE (?P<kind>DATABASE|TABLE|VIEW) (?:IF NOT EXISTS )?)"
    r"(?P<name>(?:(?P<database>\w+)\.)?(?P<table>\w+))"
)
_ALTER = re.compile(r"^ALTER TABLE (?P<database>\w+)\.(?P<table>\w+)\s+(?P<action>\w+\s+\w+)")
_MERGE_TREE = re.compile(r"\bENGINE = (?P<family>\w*MergeTree)\b(?:\((?P<args>[^()]*)\))?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def render(statement: str, cluster: str) -> tuple[str, ...]:
    """The statements that create what ``statement`` creates on every host of ``cluster``.

    A MergeTree-family table gives two statements (the local replicated table, then the
    Distributed table under the original name); anything else gives itself ``ON CLUSTER``.
    Raises ValueError for a statement these rules do not cover.
    """
    on_cluster = f" ON CLUSTER {_quote(cluster)}"
    altered = _ALTER.match(statement)
    if altered is not None:
        return _render_alter(statement, altered, on_cluster)
    created = _CREATE.match(statement)
    if created is None:
        raise ValueError(f"cannot render for a cluster: {statement[:60]!r}")
    engine = _MERGE_TREE.search(statement)
    if created["kind"] != "TABLE" or engine is None:
        return (statement[: created.end()] + on_cluster + statement[created.end() :],)
    database, table = created["database"], created["table"]
    if database is None:
        raise ValueError(f"name the database of table {table} for a cluster")
    if table not in SHARDING_KEYS:
        raise ValueError(f"table {database}.{table} has no sharding key in SHARDING_KEYS")
    if statement[engine.end() :].startswith("("):
        raise ValueError(f"nested engine arguments of {database}.{table}: render by hand")
    replication = [f"'/clickhouse/tables/{{shard}}/{database}/{table}'", "'{replica}'"]
    arguments = ", ".join(replication + ([engine["args"]] if engine["args"] else []))
    local = (
        f"{created['head']}{database}.{table}_local{on_cluster}"
        + statement[created.end() : engine.start()]
        + f"ENGINE = Replicated{engine['family']}({arguments})"
        + statement[engine.end() :]
    )
    distributed = (
        f"{created['head']}{created['name']}{on_cluster} AS {database}.{table}_local\n"
        f"ENGINE = Distributed({_quote(cluster)}, {database}, {table}_local, "
        f"{SHARDING_KEYS[table]})"
    )
    return local, distributed


# What an ALTER of a replicated table changes: its local tables only (indexes, TTL, settings,
# projections live where the rows are), or the Distributed table too (columns, which both
# must have alike).
_LOCAL_ONLY = {"ADD INDEX", "DROP INDEX", "MATERIALIZE INDEX", "MODIFY TTL", "MODIFY SETTING"}
_BOTH = {"ADD COLUMN", "DROP COLUMN", "MODIFY COLUMN", "COMMENT COLUMN", "RENAME COLUMN"}


def _render_alter(statement: str, altered: re.Match[str], on_cluster: str) -> tuple[str, ...]:
    database, table = altered["database"], altered["table"]
    head, rest = statement[: altered.start("action")], statement[altered.start("action") :]
    if table not in SHARDING_KEYS:  # not a replicated table: the statement as it is
        return (f"{head.rstrip()}{on_cluster} {rest}",)
    action = " ".join(altered["action"].upper().split())
    if action not in _LOCAL_ONLY | _BOTH:
        raise ValueError(f"cannot render {action} of {database}.{table} for a cluster")
    if "," in rest:
        raise ValueError(f"one action per ALTER of {database}.{table} for a cluster")
    if action == "MODIFY SETTING" and rest.split()[2].startswith("non_replicated_"):
        return ()  # a plain MergeTree's setting: the Replicated tables have their own
    local = f"ALTER TABLE {database}.{table}_local{on_cluster} {rest}"
    if action in _LOCAL_ONLY:
        return (local,)
    return local, f"{head.rstrip()}{on_cluster} {rest}"


def _quote(cluster: str) -> str:
    return cluster if _IDENTIFIER.fullmatch(cluster) else f"`{cluster}`"


MIGRATIONS: Traversable = resources.files("voicemon.migrations")
VERSION_TABLE = "voicemon.schema_migrations"

# Made before anything else, so that the record can be read; both are idempotent.
_BOOTSTRAP = (
    "CREATE DATABASE IF NOT EXISTS voicemon",
    f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE}
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version""",
)


MIGRATION_NAME = re.compile(r"(\d{1,9})_(\w[\w.-]*)\.sql")


def parse(name: str, data: bytes, cluster: str | None = None) -> Migration:
    """The migration of the file ``name`` (``NNNN_what.sql``) holding ``data``; a name that
    does not parse or a file that is not UTF-8 is a ``MigrationError`` naming the file."""
    named = MIGRATION_NAME.fullmatch(name)
    if named is None:
        raise MigrationError(f"the migration file {name!r} is not named NNNN_what.sql (a number, "
                             "an underscore, a name): rename it")  # fmt: skip
    version, rest = named.groups()
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        raise MigrationError(f"the migration file {name!r} is not UTF-8 text: fix it") from None
    body = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
    statements = tuple(part.strip() for part in body.split(";") if part.strip())
    if cluster:
        statements = tuple(out for one in statements for out in render(one, cluster))
    checksum = hashlib.sha256(data).hexdigest()
    return Migration(int(version), rest, statements, checksum)


def migrations(cluster: str | None = None, folder: Traversable = MIGRATIONS) -> list[Migration]:
    """The numbered SQL files of ``folder`` (voicemon/migrations), in order; for ``cluster``
    if given. Two files with one number are an error."""
    found = [
        parse(entry.name, entry.read_bytes(), cluster)
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    found.sort(key=lambda migration: migration.version)
    for before, after in pairwise(found):
        if before.version == after.version:
            raise MigrationError(f"two migrations are numbered {after.version:04d}: rename one")
    return found


def plan(files: Sequence[Migration], applied: Iterable[Applied]) -> Plan:
    """Compare the files with the store's record (pure)."""
    recorded = {row.version: row for row in applied}
    known = {migration.version for migration in files}
    return Plan(
        pending=tuple(m for m in files if m.version not in recorded),
        changed=tuple(
            m for m in files if m.version in recorded and recorded[m.version].checksum != m.checksum
        ),
        unknown=tuple(row for version, row in sorted(recorded.items()) if version not in known),
    )


def applied(client: Client) -> list[Applied]:
    """The store's record, one row per version (the first time it was applied); none for a
    store without the version table (new, or made before versioned migrations)."""
    database, table = VERSION_TABLE.split(".")
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {d:String} AND name = {t:String}",
        parameters={"d": database, "t": table},
    )
    if not exists.result_rows[0][0]:
        return []
    result = client.query(
        "SELECT version, argMin(name, applied_at), argMin(checksum, applied_at), "
        f"toString(min(applied_at)) FROM {VERSION_TABLE} GROUP BY version ORDER BY version"
    )
    return [Applied(*row) for row in result.result_rows]


def status(client: Client, cluster: str | None = None, folder: Traversable = MIGRATIONS) -> Plan:
    """The plan for the store behind ``client``; changes nothing."""
    return plan(migrations(cluster, folder), applied(client))


def migrate(
    client: Client, cluster: str | None = None, folder: Traversable = MIGRATIONS
) -> list[str]:
    """Apply the pending migrations in order, recording each; return the names applied now.

    The schema is the cluster form when ``cluster`` names one. Raises MigrationError, and
    applies nothing, when a migration the store has applied has changed since.
    """
    for statement in _bootstrap(cluster):
        client.command(statement)
    todo = status(client, cluster, folder)
    if todo.changed:
        names = ", ".join(f"{m.label}.sql" for m in todo.changed)
        raise MigrationError(
            f"migration {names} changed after it was applied to this store (its sha256 differs "
            f"from {VERSION_TABLE}); restore the file and put the change in a new numbered one"
        )
    if todo.unknown:
        log.warning(
            "the store has migrations this voicemon does not know (a newer version applied them)",
            extra={"versions": [row.version for row in todo.unknown]},
        )
    done = []
    for migration in todo.pending:
        for statement in migration.statements:
            client.command(statement)
        _record(client, migration, cluster)
        done.append(migration.label)
    log.info("store migrated", extra={"migrations": done, "cluster": cluster})
    return done


def _bootstrap(cluster: str | None) -> tuple[str, ...]:
    if not cluster:
        return _BOOTSTRAP
    return tuple(out for one in _BOOTSTRAP for out in render(one, cluster))


def _record(client: Client, migration: Migration, cluster: str | None) -> None:
    client.command(
        f"INSERT INTO {VERSION_TABLE} (version, name, checksum, applied_at) "
        "SELECT {version:UInt32}, {name:String}, {checksum:String}, now64(3, 'UTC')",
        parameters={
            "version": migration.version,
            "name": migration.name,
            "checksum": migration.checksum,
        },
        # Through the Distributed table, return only once the shard holds the row.
        settings={"insert_distributed_sync": 1} if cluster else None,
    )
