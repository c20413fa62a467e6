"""The ``voicemon`` command line: one module per group of commands."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Annotated

import typer

from runtime.cli import api, dlq, metrics, orgs, store, topics, worker
from runtime.cli.errors import OneSentenceGroup

app = typer.Typer(
    cls=OneSentenceGroup,  # any failure is one sentence on stderr (runtime/cli/errors.py)
    no_args_is_help=True,
    add_completion=False,
    help="Monitor the voice pipeline.",
)
for group in (worker, store, api, orgs, dlq, topics):
    group.register(app)
# The developer commands (stack, produce, demo) run the local stack from a source checkout:
# the wheel does not ship voicemon.devtools, so an installed voicemon has no such commands.
if importlib.util.find_spec("voicemon.devtools") is not None:
    importlib.import_module("runtime.cli.stack").register(app)
app.add_typer(metrics.app, name="metrics")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version  # slow to import; only --version needs it

        print(f"voicemon {version('voicemon')}")
        raise typer.Exit()


@app.callback()
def options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print voicemon's version and exit.",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="VOICEMON_DEBUG",
            help="On failure, print the traceback and the client libraries' logs too.",
        ),
    ] = False,
) -> None:
    """Monitor the voice pipeline."""
    # OneSentenceGroup reads --debug from the arguments before any command runs.


def main() -> None:
    app()
