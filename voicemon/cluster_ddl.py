"""The cluster form of the store's DDL, derived from the single-node migrations.

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
"""

from __future__ import annotations

import re

# Where the rows of each replicated table live. Every version of one snapshot key must land
# on one shard, so that FINAL in the *_latest views (run per shard) keeps exactly the newest.
SHARDING_KEYS = {
    "pipeline_events": "cityHash64(event_id)",
    "stored_event_ids": "cityHash64(event_id)",
    "snapshots": "cityHash64(period_type, scope, organization_id, period_start)",
    "stage_snapshots": "cityHash64(period_type, scope, organization_id, period_start)",
    "organizations": "cityHash64(organization_id)",
    "schema_migrations": "version",
}

_CREATE = re.compile(
    r"^(?P<head>CREATE (?P<kind>DATABASE|TABLE|VIEW|MATERIALIZED VIEW) (?:IF NOT EXISTS )?)"
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
