"""The store's commands: migrate, sql, raw-count, retention, replay, close-windows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.markup import escape
from rich.progress import Progress

from aggregators.query import queries
from runtime.cli.common import AsJson, console, fail, open_resources, open_store, settings
from runtime.cli.preflight import check_kafka, require_redis
from voicemon import store, store_migrations

if TYPE_CHECKING:
    from aggregators.closing.closer import WindowCloser
    from aggregators.closing.window_state import WindowState

retention_app = typer.Typer(no_args_is_help=True, help="Snapshot and raw-event retention.")


def migrate(
    show: Annotated[
        bool, typer.Option("--print", help="Print the SQL it would run; connect to nothing.")
    ] = False,
    show_status: Annotated[
        bool, typer.Option("--status", help="List applied and pending migrations; change nothing.")
    ] = False,
) -> None:
    """Apply the pending schema migrations in order (ON CLUSTER if VOICEMON_CLICKHOUSE_CLUSTER
    is set) and record each in voicemon.schema_migrations."""
    cluster = settings().clickhouse_cluster
    if show:
        for migration in store_migrations.migrations(cluster):
            print(f"-- {migration.label}")
            for statement in migration.statements:
                print(f"{statement};\n")
        return
    client = open_store()
    try:
        if show_status:
            _print_status(
                store_migrations.status(client, cluster), store_migrations.applied(client)
            )
            return
        done = store_migrations.migrate(client, cluster)
    except store.StoreError as error:  # a changed migration: one sentence, no traceback
        fail(str(error))
    for name in done:
        console.print(f"applied {name}")
    latest = max((m.version for m in store_migrations.migrations()), default=0)
    console.print(f"schema at version {latest:04d}" + ("" if done else ", nothing to apply"))


def _print_status(plan: store_migrations.Plan, applied: list[store_migrations.Applied]) -> None:
    changed = {m.version for m in plan.changed}
    unknown = {row.version for row in plan.unknown}
    for row in applied:
        note = " [changed since]" if row.version in changed else ""
        note += " [unknown to this voicemon]" if row.version in unknown else ""
        console.print(f"applied {row.version:04d}_{row.name}  {row.applied_at}{escape(note)}")
    for migration in plan.pending:
        console.print(f"pending {migration.label}")
    if plan.changed:
        fail(f"{len(plan.changed)} applied migration(s) changed since; see above")


def sql(query: str) -> None:
    """Run one read-only SQL query; print JSON rows (embedded store: stop the worker first)."""
    result = open_store().query(query, settings={"readonly": 1})
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    print(orjson.dumps(rows, default=str).decode())


def raw_count(as_json: AsJson = False) -> None:
    """Rows in voicemon.pipeline_events (opens the store: stop an embedded worker first)."""
    rows = open_store().query("SELECT count() FROM voicemon.pipeline_events").result_rows[0][0]
    print(orjson.dumps({"raw_rows": rows}).decode() if as_json else f"raw rows: {rows:,}")


@retention_app.command("run")
def retention_run(as_json: AsJson = False) -> None:
    """Delete hourly snapshots > 7 d, daily > 90 d and raw events > 48 h old, now."""
    from aggregators.closing import retention

    deleted = retention.run(open_store(), int(time.time() * 1000), settings().clickhouse_cluster)
    if as_json:
        print(orjson.dumps(deleted).decode())
        return
    for rule, count in deleted.items():
        console.print(f"{rule}: {count:,} row(s) deleted")


def _closer(
    clock: Callable[[], float] = time.time,
) -> tuple[WindowCloser, WindowState, store.Client]:
    # The closer's modules (and the Redis client) are imported by the commands that close
    from aggregators.closing.closer import build_closer
    from aggregators.closing.window_state import WindowState

    check_kafka(settings())
    require_redis(settings())
    opened = open_resources()
    assert opened.store is not None
    state = WindowState(opened.redis)
    closer = build_closer(settings(), state, opened.store, opened.publisher, clock)
    return closer, state, opened.store


def _time(value: str, name: str) -> int:
    try:
        return queries.parse_time(value, name)
    except queries.QueryError as error:
        fail(str(error))


def replay(
    from_: Annotated[str, typer.Option("--from", help="RFC 3339 time or epoch ms.")],
    to: Annotated[str, typer.Option(help="RFC 3339 time or epoch ms.")],
) -> None:
    """Recompute and re-emit the closed windows of a range from retained raw events."""
    from aggregators.closing.recompute import recompute

    start_ms, end_ms = _time(from_, "from"), _time(to, "to")
    if start_ms > end_ms:
        fail("--from must not be after --to")
    closer, state, client = _closer()
    with Progress(console=console) as progress:
        task = progress.add_task("recomputing windows", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        now_ms = int(time.time() * 1000)
        report = asyncio.run(
            recompute(closer.unfenced(), state, client, start_ms, end_ms, now_ms, advance)
        )
    console.print(
        f"recomputed {len(report.windows)} window(s): {report.changed} row(s) changed, "
        f"{report.unchanged} unchanged, {report.added} new"
    )
    for window, why in report.kept.items():
        console.print(f"kept {window}: {escape(why)}")
    for window in report.unpublished:
        console.print(f"not yet published {window}: written, the closer publishes it")


def close_windows(
    now: Annotated[str | None, typer.Option(help="Act as if it were this time.")] = None,
) -> None:
    """Run one tick of the window closer now (it takes the lease if no one holds it)."""
    at = None if now is None else _time(now, "now") / 1000
    closer, _, _ = _closer(time.time if at is None else lambda: at)
    report = asyncio.run(closer.tick())
    if not report.leader:
        fail("another closer holds the lease; nothing done")
    console.print(f"queued {len(report.queued)}, emitted {len(report.emitted)} window(s)")


def register(app: typer.Typer) -> None:
    app.command()(migrate)
    app.command()(sql)
    app.command("raw-count")(raw_count)
    app.add_typer(retention_app, name="retention")
    app.command()(replay)
    app.command("close-windows")(close_windows)
