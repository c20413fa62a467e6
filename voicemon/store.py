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
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect

log = logging.getLogger(__name__)

Client = Any  # clickhouse_connect ships no type information for its client classes


class StoreError(Exception):
    """The store could not be opened or migrated. Operator action: check VOICEMON_CLICKHOUSE_DSN."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def connect(dsn: str) -> Client:
    """Open a client for ``dsn``; the message of a failure never contains the DSN's secret."""
    try:
        return clickhouse_connect.get_client(dsn=dsn)
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
}

_CREATE = re.compile(
    r"^(?P<head>CREATE (?P<kind>DATABASE|TABLE|VIEW) (?:IF NOT EXISTS )?)"
    r"(?P<name>(?:(?P<database>\w+)\.)?(?P<table>\w+))"
)
_MERGE_TREE = re.compile(r"\bENGINE = (?P<family>\w*MergeTree)\b(?:\((?P<args>[^()]*)\))?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def render(statement: str, cluster: str) -> tuple[str, ...]:
    """The statements that create what ``statement`` creates on every host of ``cluster``.

    A MergeTree-family table gives two statements (the local replicated table, then the
    Distributed table under the original name); anything else gives itself ``ON CLUSTER``.
    Raises ValueError for a statement these rules do not cover.
    """
    created = _CREATE.match(statement)
    if created is None:
        raise ValueError(f"cannot render for a cluster: {statement[:60]!r}")
    on_cluster = f" ON CLUSTER {_quote(cluster)}"
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


def _quote(cluster: str) -> str:
    return cluster if _IDENTIFIER.fullmatch(cluster) else f"`{cluster}`"


def migrations(cluster: str | None = None) -> list[Migration]:
    """The numbered SQL files of ``voicemon/migrations``, in order; for ``cluster`` if given."""
    found = []
    for entry in resources.files("voicemon.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        version, _, rest = entry.name.partition("_")
        text = "\n".join(
            line for line in entry.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        statements = tuple(part.strip() for part in text.split(";") if part.strip())
        if cluster:
            statements = tuple(out for one in statements for out in render(one, cluster))
        found.append(Migration(int(version), rest.removesuffix(".sql"), statements))
    return sorted(found, key=lambda migration: migration.version)


def migrate(client: Client, cluster: str | None = None) -> list[str]:
    """Apply every migration (each statement is idempotent); return the names applied.

    The schema is the cluster form when ``cluster`` names one.
    """
    applied = []
    for migration in migrations(cluster):
        for statement in migration.statements:
            client.command(statement)
        applied.append(f"{migration.version:04d}_{migration.name}")
    log.info("store migrated", extra={"migrations": applied, "cluster": cluster})
    return applied
