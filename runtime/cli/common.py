"""What every command shares: the console, one-sentence failures, settings, tables, JSON."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from voicemon import resources
from voicemon.settings import Settings
from voicemon.store import Client, StoreError

console = Console()

Home = Annotated[Path, typer.Option(help="Folder for the stack's data and logs.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(1)


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings from the environment; a bad value ends the command with one sentence."""
    try:
        return Settings()
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        name = "VOICEMON_" + "_".join(str(part) for part in problem["loc"]).upper()
        fail(f"{name}: {problem['msg']}")


def open_store() -> Client:
    """The configured store, as it is (no migration); a failure ends the command."""
    try:
        return resources.connect_store(settings())
    except StoreError as error:
        fail(str(error))


def open_resources() -> resources.Resources:
    """Redis, the store (migrated) and a Kafka publisher, as the worker opens them."""
    try:
        return resources.open_resources(settings())
    except StoreError as error:
        fail(str(error))


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_json(value: Any) -> None:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())
