"""The ``voicemon`` command line."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from voicemon.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Monitor the voice pipeline.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack without Docker.")
metrics_app = typer.Typer(no_args_is_help=True, help="Read pipeline metrics.")
app.add_typer(stack_app, name="stack")
app.add_typer(metrics_app, name="metrics")
console = Console()

Home = Annotated[Path, typer.Option(help="Folder for the stack's data and logs.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@stack_app.command("up")
def stack_up(home: Home = Path("var")) -> None:
    """Start Kafka and Redis (idempotent) and create the topics."""
    from voicemon.localstack import LocalStack, StackError

    try:
        started = LocalStack(get_settings(), home).up()
    except StackError as error:
        _fail(str(error))
    console.print(f"stack up ({', '.join(started) or 'already running'})")


@stack_app.command("down")
def stack_down(home: Home = Path("var")) -> None:
    """Stop what ``stack up`` started."""
    from voicemon.localstack import LocalStack

    stopped = LocalStack(get_settings(), home).down()
    console.print(f"stack down ({', '.join(stopped) or 'nothing was running'})")


@stack_app.command("status")
def stack_status(home: Home = Path("var"), as_json: AsJson = False) -> None:
    from voicemon.localstack import LocalStack

    status = LocalStack(get_settings(), home).status()
    if as_json:
        print(orjson.dumps(status).decode())
    else:
        for part, up in status.items():
            console.print(f"{part}: {'[green]up' if up else '[red]down'}")


@app.command()
def migrate(
    show: Annotated[
        bool, typer.Option("--print", help="Print the SQL it would run; connect to nothing.")
    ] = False,
) -> None:
    """Create or update the ClickHouse schema (ON CLUSTER if VOICEMON_CLICKHOUSE_CLUSTER is set)."""
    from voicemon import store

    if show:
        for migration in store.migrations(get_settings().clickhouse_cluster):
            print(f"-- {migration.version:04d}_{migration.name}")
            for statement in migration.statements:
                print(f"{statement};\n")
        return
    client = _store()
    for name in store.migrate(client):
        console.print(f"applied {name}")


def _store() -> Any:
    from voicemon import store

    try:
        return store.connect(get_settings().clickhouse_dsn.get_secret_value())
    except store.StoreError as error:
        _fail(str(error))


@app.command()
def worker(loglevel: str = "info") -> None:
    """Run the Faust worker: consume events into Redis and ClickHouse."""
    sys.argv = [sys.argv[0]]
    from consumers.agent import run_worker

    run_worker(loglevel)


@app.command()
def produce(
    rate: Annotated[float, typer.Option(help="Events per second.")] = 1000,
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 10,
    orgs: Annotated[int, typer.Option(help="Number of organizations.")] = 10,
    seed: int = 1,
    duplicates: Annotated[float, typer.Option(help="Share of events resent.")] = 0.0,
    malformed: Annotated[float, typer.Option(help="Share of malformed messages.")] = 0.0,
    single: Annotated[bool, typer.Option(help="One event per message.")] = False,
) -> None:
    """Publish realistic synthetic pipeline events."""
    from voicemon.loadgen import LoadMix
    from voicemon.producer import EventProducer

    settings = get_settings()
    producer = EventProducer(settings.kafka_bootstrap, settings.events_topic, batch=not single)
    mix = LoadMix(seed, orgs, settings.stages, duplicates, malformed)
    clock = (int(time.time() * 1000) for _ in itertools.count())
    started = time.monotonic()
    sent = {"events": 0, "malformed": 0}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("producing", total=duration)
        for item in mix.stream(clock):
            if isinstance(item, bytes):
                producer.publish_raw(item)
                sent["malformed"] += 1
            else:
                producer.publish(item)
                sent["events"] += 1
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            ahead = sent["events"] / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
                progress.update(task, completed=min(elapsed, duration))
    producer.flush()
    console.print(f"published {sent['events']} events and {sent['malformed']} malformed messages")


@metrics_app.command("realtime")
def metrics_realtime(
    org: Annotated[str | None, typer.Option("--org", help="Organization id.")] = None,
    as_json: AsJson = False,
) -> None:
    """The rolling last-hour numbers, from Redis."""
    from redis import Redis

    from aggregators.realtime import read_realtime

    settings = get_settings()
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        view = read_realtime(redis, org, settings.stages)
    except Exception as error:
        _fail(f"cannot read Redis: {type(error).__name__}")
    if as_json:
        print(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"last hour — {org or 'platform'} (as of {view['as_of']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in (
        "artifacts_received",
        "artifacts_completed",
        "artifacts_failed",
        "failure_rate",
        "avg_latency_ms",
        "ai_cost_usd",
    ):
        table.add_row(name, _fmt(view[name]))
    console.print(table)
    stages = Table(title="stages")
    for column in ("stage", "started", "completed", "failed", "failure_rate", "avg_duration_ms"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for stage, row in view["stages"].items():
        stages.add_row(stage, *(_fmt(value) for value in row.values()))
    console.print(stages)


def _fmt(value: object) -> str:
    return (
        f"{value:,.4f}"
        if isinstance(value, float)
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


Period = Annotated[str, typer.Option(help="hourly or daily.")]
Start = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
End = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
Org = Annotated[str | None, typer.Option("--org", help="Organization id; platform if absent.")]


def _snapshot_query(name: str, period: str, start: str, end: str, org: str | None) -> Any:
    from aggregators import queries

    try:
        start_ms, end_ms = queries.parse_time(start, "start"), queries.parse_time(end, "end")
        return getattr(queries, name)(_store(), period, start_ms, end_ms, org)
    except queries.QueryError as error:
        _fail(str(error))


def _print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())


@metrics_app.command("history")
def metrics_history(
    period: Period = "hourly", start: Start = "", end: End = "", org: Org = None,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Snapshots of a range and their merged summary (reads snapshots only)."""
    result = _snapshot_query("history", period, start, end, org)
    if as_json:
        _print_json(result)
        return
    columns = ("period_start", "artifacts_received", "artifacts_completed", "artifacts_failed",
               "failure_rate", "avg_latency_ms", "p95_latency_ms", "ai_cost_usd")  # fmt: skip
    table = Table(title=f"{period} history — {org or 'platform'}")
    for column in columns:
        table.add_column(column, justify="left" if column == "period_start" else "right")
    for row in [*result["rows"], {"period_start": "summary", **result["summary"]}]:
        table.add_row(*(_fmt(row[column]) for column in columns))
    console.print(table)


@metrics_app.command("stages")
def metrics_stages(
    period: Period = "hourly", start: Start = "", end: End = "", org: Org = None,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Per-stage numbers of a range, merged (reads stage snapshots only)."""
    result = _snapshot_query("stages", period, start, end, org)
    if as_json:
        _print_json(result)
        return
    columns = ("started", "completed", "failed", "failure_rate", "avg_duration_ms",
               "p95_duration_ms")  # fmt: skip
    table = Table(title=f"stages, {period} — {org or 'platform'}")
    table.add_column("stage")
    for column in columns:
        table.add_column(column, justify="right")
    for stage, row in result["summary"].items():
        table.add_row(stage, *(_fmt(row[column]) for column in columns))
    console.print(table)


def _closer_parts(clock: Callable[[], float] = time.time) -> tuple[Any, Any, Any]:
    from redis.asyncio import Redis

    from aggregators.closer import build_closer
    from voicemon import store
    from voicemon.window_state import WindowState

    settings = get_settings()
    client = _store()
    store.migrate(client)
    state = WindowState(Redis.from_url(settings.redis_url.get_secret_value()))
    return build_closer(settings, state, client, clock), state, client


@app.command()
def replay(
    from_: Annotated[str, typer.Option("--from", help="RFC 3339 time or epoch ms.")],
    to: Annotated[str, typer.Option(help="RFC 3339 time or epoch ms.")],
) -> None:
    """Recompute and re-emit the closed windows of a range from retained raw events."""
    import asyncio

    from aggregators import queries
    from aggregators.replay import replay as run_replay

    try:
        start_ms, end_ms = queries.parse_time(from_, "from"), queries.parse_time(to, "to")
    except queries.QueryError as error:
        _fail(str(error))
    if start_ms > end_ms:
        _fail("--from must not be after --to")
    closer, state, client = _closer_parts()
    with Progress(console=console) as progress:
        task = progress.add_task("replaying windows", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        now_ms = int(time.time() * 1000)
        report = asyncio.run(run_replay(closer, state, client, start_ms, end_ms, now_ms, advance))
    console.print(
        f"replayed {len(report.windows)} window(s): {report.changed} row(s) changed, "
        f"{report.unchanged} unchanged, {report.added} new"
    )


@app.command("close-windows")
def close_windows(
    now: Annotated[str | None, typer.Option(help="Act as if it were this time.")] = None,
) -> None:
    """Run one tick of the window closer now (it takes the lease if no one holds it)."""
    import asyncio

    from aggregators import queries

    at = None if now is None else queries.parse_time(now, "now") / 1000
    closer, _, _ = _closer_parts(time.time if at is None else lambda: at)
    report = asyncio.run(closer.tick())
    if not report.leader:
        _fail("another closer holds the lease; nothing done")
    console.print(f"queued {len(report.queued)}, emitted {len(report.emitted)} window(s)")


retention_app = typer.Typer(no_args_is_help=True, help="Snapshot and raw-event retention.")
app.add_typer(retention_app, name="retention")


@retention_app.command("run")
def retention_run(as_json: AsJson = False) -> None:
    """Delete hourly snapshots > 7 d, daily > 90 d and raw events > 48 h old, now."""
    from aggregators import retention

    settings = get_settings()
    deleted = retention.run(_store(), int(time.time() * 1000), settings.clickhouse_cluster)
    if as_json:
        print(orjson.dumps(deleted).decode())
        return
    for rule, count in deleted.items():
        console.print(f"{rule}: {count:,} row(s) deleted")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the query API (use a ClickHouse server DSN to run it beside workers)."""
    import asyncio

    from redis.asyncio import Redis

    from aggregators.api import create_app
    from aggregators.serve import server

    settings = get_settings()
    if settings.jwt_secret is None:
        _fail("VOICEMON_JWT_SECRET must be set to serve the query API")
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    application = create_app(settings, _store(), redis)
    bind, listen = host or settings.api_bind, port or settings.api_port
    console.print(f"query API on http://{bind}:{listen} (OpenAPI at /openapi.json)")
    asyncio.run(server(application, bind, listen, embedded=False).serve())


token_app = typer.Typer(no_args_is_help=True, help="API tokens for operators.")
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    staff: Annotated[bool, typer.Option("--staff", help="A platform staff token.")] = False,
    org: Annotated[str | None, typer.Option("--org", help="Token of one organization.")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 30m, 1h, 7d or seconds.")] = "1h",
    subject: Annotated[str, typer.Option("--sub", help="Who the token is for.")] = "operator",
) -> None:
    """Mint a signed token (HS256 with VOICEMON_JWT_SECRET) and print it."""
    from aggregators.auth import mint

    secret = get_settings().jwt_secret
    if secret is None:
        _fail("VOICEMON_JWT_SECRET must be set to mint tokens")
    if staff == (org is not None):
        _fail("give exactly one of --staff or --org ID")
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = int(ttl[:-1]) * units[ttl[-1]] if ttl[-1] in units else int(ttl)
    except ValueError:
        _fail(f"--ttl {ttl!r}: use e.g. 30m, 1h, 7d or a number of seconds")
    print(mint(secret.get_secret_value(), subject, staff=staff, organization_id=org, ttl_s=seconds))


orgs_app = typer.Typer(no_args_is_help=True, help="The organization directory.")
app.add_typer(orgs_app, name="orgs")


@orgs_app.command("import")
def orgs_import(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Load organization names from a CSV of 'organization_id,name' rows."""
    from aggregators import organizations

    try:
        names = organizations.read_csv(path)
    except organizations.DirectoryError as error:
        _fail(str(error))
    client = _store()
    from voicemon import store

    store.migrate(client)
    console.print(f"imported {organizations.upsert(client, names)} organization(s)")


@metrics_app.command("orgs")
def metrics_orgs(
    period: Period = "daily", start: Start = "", end: End = "",
    limit: Annotated[int, typer.Option(help="At most this many organizations.")] = 20,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Per-organization volume, failures, latency and cost, busiest first."""
    from aggregators import queries

    try:
        start_ms, end_ms = queries.parse_time(start, "start"), queries.parse_time(end, "end")
        result = queries.organizations(_store(), period, start_ms, end_ms, limit)
    except queries.QueryError as error:
        _fail(str(error))
    if as_json:
        _print_json(result)
        return
    columns = ("organization_id", "name", "artifacts_received", "artifacts_failed",
               "failure_rate", "p95_latency_ms", "ai_cost_usd")  # fmt: skip
    table = Table(title=f"organizations, {period}")
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:2] else "right")
    for row in result["organizations"]:
        table.add_row(*(_fmt(row[column]) for column in columns))
    console.print(table)


@app.command("raw-count")
def raw_count(as_json: AsJson = False) -> None:
    """Rows in voicemon.pipeline_events (opens the store: stop an embedded worker first)."""
    client = _store()
    rows = client.query("SELECT count() FROM voicemon.pipeline_events").result_rows[0][0]
    print(orjson.dumps({"raw_rows": rows}).decode() if as_json else f"raw rows: {rows:,}")


@app.command()
def sql(query: str) -> None:
    """Run one read-only SQL query; print JSON rows (embedded store: stop the worker first)."""
    client = _store()
    result = client.query(query, settings={"readonly": 1})
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    print(orjson.dumps(rows, default=str).decode())


@app.command("dlq-count")
def dlq_count(as_json: AsJson = False) -> None:
    """Messages in the DLQ topic."""
    from voicemon.topics import message_count

    settings = get_settings()
    count = message_count(settings.kafka_bootstrap, settings.dlq_topic)
    print(orjson.dumps({"dlq_messages": count}).decode() if as_json else f"DLQ messages: {count:,}")


@app.command()
def demo(seconds: float = 60, rate: float = 2000, home: Home = Path("var")) -> None:
    """The main job on the embedded stack: start it, run a worker and the producer, report."""
    from voicemon.localstack import LocalStack

    stack = LocalStack(get_settings(), home)
    stack.up()
    log = (home / "log" / "worker.log").open("ab")
    worker_process = subprocess.Popen(
        [sys.executable, "-m", "voicemon", "worker"], stdout=log, stderr=log
    )
    try:
        produce(
            rate=rate,
            duration=seconds,
            orgs=20,
            seed=int(time.time()),
            duplicates=0.01,
            malformed=0.001,
            single=False,
        )
        time.sleep(5)  # let the last batches become durable
        metrics_realtime(org=None, as_json=False)
    finally:
        worker_process.terminate()
        worker_process.wait(timeout=60)
    raw_count(as_json=False)
    dlq_count(as_json=False)
    stack.down()


def main() -> None:
    app()
