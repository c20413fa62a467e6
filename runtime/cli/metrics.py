"""``voicemon metrics realtime|history|stages|orgs``: the four queries of CONTRACT §7.

Direct mode (operators) reads Redis and the store; with ``--api URL`` (or VOICEMON_API_URL)
and a token the same commands ask the HTTP API and print the same tables and JSON.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated, Any, Literal

import typer
from rich.console import Group

from aggregators.query.queries import MAX_ORGANIZATIONS
from runtime.cli import tables
from runtime.cli.common import AsJson, console, fail, print_json
from runtime.cli.live import watch_in_place, watch_json_lines
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
WATCH_EVERY_S = 2.0
Watch = Annotated[
    bool, typer.Option("--watch", help="Refresh in place until Ctrl-C: --watch [SECONDS].")
]
Every = Annotated[
    float | None,
    typer.Argument(min=0.1, metavar="SECONDS", show_default=False,
                   help="With --watch: seconds between refreshes (default 2)."),
]  # fmt: skip


BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750's b64token


def source(api: str | None, token: str | None) -> MetricsSource:
    """The API when ``--api`` is given (it needs a token), else Redis and the store."""
    if api is None:
        return Direct()
    token = (token or "").strip()  # a token read from a file keeps its trailing newline
    if not token:
        fail("--api needs a token: pass --token or set VOICEMON_TOKEN (voicemon token create)")
    if not BEARER_TOKEN.fullmatch(token):
        fail("the token of --token or VOICEMON_TOKEN holds characters no bearer token has (a "
             "space, a control character or non-ASCII); check how it was set")  # fmt: skip
    return OverApi(api, token)


@app.command("realtime")
def metrics_realtime(
    org: Org = None, as_json: AsJson = False, watch: Watch = False, every: Every = None,
    api: ApiUrl = None, token: Token = None,
) -> None:  # fmt: skip
    """The rolling last-hour numbers, from Redis or the API (``--watch``: refreshed in place)."""
    if every is not None and not watch:
        fail("SECONDS sets the refresh of --watch: give --watch SECONDS")
    metrics = source(api, token)

    def read() -> Any:
        return metrics.realtime(org)

    view = read()  # a first read that fails ends the command with one sentence
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
    console.print(tables.history_table(result, period, org))


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
    console.print(tables.stages_table(result, period, org))


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
    console.print(tables.organizations_table(result, period))
