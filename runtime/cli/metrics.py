"""``voicemon metrics realtime|history|stages|orgs``: the four queries of CONTRACT §7."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import typer
from redis import Redis
from rich.console import Group

from aggregators import queries
from aggregators.realtime import read_realtime
from runtime.cli import tables
from runtime.cli.common import AsJson, console, fail, open_store, print_json, settings
from runtime.cli.live import watch_in_place, watch_json_lines

app = typer.Typer(no_args_is_help=True, help="Read pipeline metrics.")

Period = Annotated[str, typer.Option(help="hourly or daily.")]
Start = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
End = Annotated[str, typer.Option(help="RFC 3339 time or epoch ms (inclusive).")]
Org = Annotated[str | None, typer.Option("--org", help="Organization id; platform if absent.")]
WATCH_EVERY_S = 2.0
Watch = Annotated[
    bool, typer.Option("--watch", help="Refresh in place until Ctrl-C: --watch [SECONDS].")
]
Every = Annotated[
    float | None,
    typer.Argument(min=0.1, metavar="SECONDS", show_default=False,
                   help="With --watch: seconds between refreshes (default 2)."),
]  # fmt: skip


@app.command("realtime")
def metrics_realtime(
    org: Org = None, as_json: AsJson = False, watch: Watch = False, every: Every = None
) -> None:
    """The rolling last-hour numbers, from Redis (``--watch``: refreshed in place)."""
    if every is not None and not watch:
        fail("SECONDS sets the refresh of --watch: give --watch SECONDS")
    config = settings()
    redis = Redis.from_url(config.redis_url.get_secret_value())

    def read() -> dict[str, Any]:
        return read_realtime(redis, org, config.stages)

    try:
        view = read()
    except Exception as error:
        fail(f"cannot read Redis: {type(error).__name__}")
    if watch and as_json:
        watch_json_lines(read, every or WATCH_EVERY_S, view)
    elif watch:
        watch_in_place(read, partial(_realtime_view, org=org), every or WATCH_EVERY_S, view)
    elif as_json:
        print_json(view)
    else:
        console.print(*tables.realtime_tables(view, org))


def _realtime_view(view: dict[str, Any], org: str | None) -> Group:
    return Group(*tables.realtime_tables(view, org))


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
    console.print(tables.history_table(result, period, org))


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
    console.print(tables.stages_table(result, period, org))


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
    console.print(tables.organizations_table(result, period))
