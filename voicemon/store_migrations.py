"""The store's numbered migrations (``voicemon/migrations/*.sql``), versioned.

``voicemon.schema_migrations`` records each applied file (version, name, sha256 of the file,
when), ``migrate`` applies the pending files in order and records each, and refuses to run
when an applied file has changed since. Every statement is idempotent (``IF NOT EXISTS`` /
``IF EXISTS``): ClickHouse DDL has no transactions, so a migration interrupted half-way, or
run by two processes at once, is simply run again. A store made before the version table
(every statement of 0001-0003 was ``IF NOT EXISTS``) is adopted the same way: its first
versioned migrate re-runs 0001-0003, which change nothing, records them and applies what
follows. With a cluster name, each statement takes its cluster form
(``voicemon.cluster_ddl``).
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

from voicemon.cluster_ddl import render
from voicemon.store import Client, StoreError

log = logging.getLogger("voicemon.store")


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
