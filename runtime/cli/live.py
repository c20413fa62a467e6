"""``--watch``: a view read again every few seconds and redrawn in place, until Ctrl-C.

Ctrl-C ends a watch cleanly (exit 0, no traceback). A read that fails while watching shows
its error in place of the view and is tried again on the next refresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import orjson
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from runtime.cli.common import console

View = TypeVar("View")


def watch_in_place(
    read: Callable[[], View],
    render: Callable[[View], RenderableType],
    every_s: float,
    first: View,
) -> None:
    """Show ``render(first)``, then ``render(read())`` every ``every_s`` seconds, in place."""
    try:
        with Live(_framed(render(first), every_s), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every_s)
                live.update(_framed(_attempt(read, render), every_s), refresh=True)
    except KeyboardInterrupt:
        return


def watch_json_lines(read: Callable[[], object], every_s: float, first: object) -> None:
    """Print ``first``, then ``read()`` every ``every_s`` seconds, one JSON object per line."""
    try:
        value = first
        while True:
            print(orjson.dumps(value, option=orjson.OPT_UTC_Z).decode(), flush=True)
            time.sleep(every_s)
            value = read()
    except KeyboardInterrupt:
        return


def _attempt(read: Callable[[], View], render: Callable[[View], RenderableType]) -> RenderableType:
    try:
        return render(read())
    except Exception as error:  # shown in place; the next refresh tries again
        return Text(f"read failed: {type(error).__name__}: {error}; retrying", style="red")


def _framed(view: RenderableType, every_s: float) -> RenderableType:
    return Group(view, Text(f"refreshing every {every_s:g} s; Ctrl-C to stop", style="dim"))
