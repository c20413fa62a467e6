"""``voicemon metrics realtime|history|stages|orgs``: the four queries of CONTRACT §7."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from redis import Redis
from rich.table import Table

from aggregators import queries
from aggregators.realtime import read_realtime
from runtime.cli.common import AsJson, console, fail, fmt, open_store, print_json, settings

app = typer.Typer(no_args_is_help=True, help="Read pipeline metrics.")

Period = Annotated[str, typer.Option(help="hourly or daily.")]
Start = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
End = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
Org = Annotated[str | None, typer.Option("--org", help="Organization id; platform if absent.")]
REALTIME_ROWS = ("artifacts_received", "artifacts_completed", "artifacts_failed",
                 "failure_rate", "avg_latency_ms", "ai_cost_usd")  # fmt: skip
STAGE_COLUMNS = ("started", "completed", "failed", "failure_rate", "avg_duration_ms")


def table(title: str, columns: tuple[str, ...], left: int = 1) -> Table:
    """A table whose first ``left`` columns are names (left-aligned), the rest numbers."""
    result = Table(title=title)
    for index, column in enumerate(columns):
        result.add_column(column, justify="left" if index < left else "right")
    return result


@app.command("realtime")
def metrics_realtime(org: Org = None, as_json: AsJson = False) -> None:
    """The rolling last-hour numbers, from Redis."""
    config = settings()
    redis = Redis.from_url(config.redis_url.get_secret_value())
    try:
        view = read_realtime(redis, org, config.stages)
    except Exception as error:
        fail(f"cannot read Redis: {type(error).__name__}")
    if as_json:
        print_json(view)
        return
    summary = table(f"last hour — {org or 'platform'} (as of {view['as_of']})", ("metric", "value"))
    for name in REALTIME_ROWS:
        summary.add_row(name, fmt(view[name]))
    console.print(summary)
    stages = table("stages", ("stage", *STAGE_COLUMNS))
    for stage, row in view["stages"].items():
        stages.add_row(stage, *(fmt(row[column]) for column in STAGE_COLUMNS))
    console.print(stages)


def _range(start: str, end: str) -> tuple[int, int]:
    try:
        return queries.parse_time(start, "start"), queries.parse_time(end, "end")
    except queries.QueryError as error:
        fail(str(error))


def _query(name: str, period: str, start: str, end: str, org: str | None) -> Any:
    start_ms, end_ms = _range(start, end)
    try:
        return getattr(queries, name)(open_store(), period, start_ms, end_ms, org)
    except queries.QueryError as error:
        fail(str(error))


@app.command("history")
def metrics_history(
    period: Period = "hourly", start: Start = "", end: End = "", org: Org = None,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Snapshots of a range and their merged summary (reads snapshots only)."""
    result = _query("history", period, start, end, org)
    if as_json:
        print_json(result)
        return
    columns = ("period_start", "artifacts_received", "artifacts_completed", "artifacts_failed",
               "failure_rate", "avg_latency_ms", "p95_latency_ms", "ai_cost_usd")  # fmt: skip
    rows = table(f"{period} history — {org or 'platform'}", columns)
    for row in [*result["rows"], {"period_start": "summary", **result["summary"]}]:
        rows.add_row(*(fmt(row[column]) for column in columns))
    console.print(rows)


@app.command("stages")
def metrics_stages(
    period: Period = "hourly", start: Start = "", end: End = "", org: Org = None,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Per-stage numbers of a range, merged (reads stage snapshots only)."""
    result = _query("stages", period, start, end, org)
    if as_json:
        print_json(result)
        return
    columns = ("started", "completed", "failed", "failure_rate", "avg_duration_ms",
               "p95_duration_ms")  # fmt: skip
    rows = table(f"stages, {period} — {org or 'platform'}", ("stage", *columns))
    for stage, row in result["summary"].items():
        rows.add_row(stage, *(fmt(row[column]) for column in columns))
    console.print(rows)


@app.command("orgs")
def metrics_orgs(
    period: Period = "daily", start: Start = "", end: End = "",
    limit: Annotated[int, typer.Option(help="At most this many organizations.")] = 20,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Per-organization volume, failures, latency and cost, busiest first."""
    start_ms, end_ms = _range(start, end)
    try:
        result = queries.organizations(open_store(), period, start_ms, end_ms, limit)
    except queries.QueryError as error:
        fail(str(error))
    if as_json:
        print_json(result)
        return
    columns = ("organization_id", "name", "artifacts_received", "artifacts_failed",
               "failure_rate", "p95_latency_ms", "ai_cost_usd")  # fmt: skip
    rows = table(f"organizations, {period}", columns, left=2)
    for row in result["organizations"]:
        rows.add_row(*(fmt(row[column]) for column in columns))
    console.print(rows)
