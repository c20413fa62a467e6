"""``voicemon metrics realtime|history|stages|orgs``: the four queries of CONTRACT §7.

Direct mode (operators) reads Redis and the store; with ``--api URL`` (or VOICEMON_API_URL)
and a token the same commands ask the HTTP API and print the same tables and JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.table import Table

from aggregators.queries import MAX_ORGANIZATIONS
from runtime.cli.common import AsJson, console, fail, fmt, print_json
from runtime.cli.metric_sources import Direct, MetricsSource, OverApi

app = typer.Typer(no_args_is_help=True, help="Read pipeline metrics.")

Period = Annotated[Literal["hourly", "daily"], typer.Option(help="hourly or daily.")]
Start = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
End = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
Org = Annotated[str | None, typer.Option("--org", help="Organization id; platform if absent.")]
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="VOICEMON_API_URL",
        help="Ask this voicemon API (e.g. http://127.0.0.1:8000) instead of Redis and ClickHouse.",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="VOICEMON_TOKEN", show_default=False, help="Bearer token for --api."
    ),
]
REALTIME_ROWS = ("artifacts_received", "artifacts_completed", "artifacts_failed",
                 "failure_rate", "avg_latency_ms", "ai_cost_usd")  # fmt: skip
STAGE_COLUMNS = ("started", "completed", "failed", "failure_rate", "avg_duration_ms")


def source(api: str | None, token: str | None) -> MetricsSource:
    """The API when ``--api`` is given (it needs a token), else Redis and the store."""
    if api is None:
        return Direct()
    if not token:
        fail("--api needs a token: pass --token or set VOICEMON_TOKEN (voicemon token create)")
    return OverApi(api, token)


def table(title: str, columns: tuple[str, ...], left: int = 1) -> Table:
    """A table whose first ``left`` columns are names (left-aligned), the rest numbers."""
    result = Table(title=title)
    for index, column in enumerate(columns):
        result.add_column(column, justify="left" if index < left else "right")
    return result


@app.command("realtime")
def metrics_realtime(
    org: Org = None, as_json: AsJson = False, api: ApiUrl = None, token: Token = None
) -> None:
    """The rolling last-hour numbers, from Redis."""
    view = source(api, token).realtime(org)
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


@app.command("history")
def metrics_history(
    start: Start, end: End, period: Period = "hourly", org: Org = None,
    as_json: AsJson = False, api: ApiUrl = None, token: Token = None,
) -> None:  # fmt: skip
    """Snapshots of a range and their merged summary (reads snapshots only)."""
    result = source(api, token).history(period, start, end, org)
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
    start: Start, end: End, period: Period = "hourly", org: Org = None,
    as_json: AsJson = False, api: ApiUrl = None, token: Token = None,
) -> None:  # fmt: skip
    """Per-stage numbers of a range, merged (reads stage snapshots only)."""
    result = source(api, token).stages(period, start, end, org)
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
    start: Start, end: End, period: Period = "daily",
    limit: Annotated[int, typer.Option(help="At most this many organizations.",
                                       min=1, max=MAX_ORGANIZATIONS)] = 20,
    as_json: AsJson = False, api: ApiUrl = None, token: Token = None,
) -> None:  # fmt: skip
    """Per-organization volume, failures, latency and cost, busiest first."""
    result = source(api, token).organizations(period, start, end, limit)
    if as_json:
        print_json(result)
        return
    columns = ("organization_id", "name", "artifacts_received", "artifacts_failed",
               "failure_rate", "p95_latency_ms", "ai_cost_usd")  # fmt: skip
    rows = table(f"organizations, {period}", columns, left=2)
    for row in result["organizations"]:
        rows.add_row(*(fmt(row[column]) for column in columns))
    console.print(rows)
