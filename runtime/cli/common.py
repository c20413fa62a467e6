"""What every command shares: the console, one-sentence failures, settings, tables, JSON."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console

from runtime.cli.errors import native_stderr, say
from voicemon import resources
from voicemon.settings import Settings
from voicemon.store import Client, StoreError

console = Console()
T = TypeVar("T")

_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Home = Annotated[Path, typer.Option(help="Folder for the stack's data and logs.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str) -> NoReturn:
    """End the command with ``message``, one sentence on stderr (exit 1)."""
    say(message)
    raise typer.Exit(1)


def duration_s(text: str) -> int | None:
    """``90s``, ``30m``, ``2h``, ``7d`` in seconds; None if ``text`` is none of them."""
    match = _DURATION.fullmatch(text.strip())
    return None if match is None else int(match.group(1)) * _UNIT_S[match.group(2)]


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings from the environment (a bad value raises; runtime/cli/errors.py says it)."""
    return Settings()


def open_store() -> Client:
    """The configured store, as it is (no migration)."""
    return _with_engine_words(lambda: resources.connect_store(settings()))


def open_resources() -> resources.Resources:
    """Redis, the store (migrated) and a Kafka publisher, as the worker opens them."""
    return _with_engine_words(lambda: resources.open_resources(settings()))


def _with_engine_words(opening: Callable[[], T]) -> T:
    """``opening()``; if the store fails to open, its error carries what the embedded engine
    printed instead of the engine's own lines on stderr."""
    with native_stderr() as held:
        try:
            return opening()
        except StoreError as error:
            failure = error
    raise StoreError(f"{failure} {held[0]}".strip()) from None


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())
