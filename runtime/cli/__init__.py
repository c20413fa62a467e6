"""The ``voicemon`` command line: one module per group of commands."""

from __future__ import annotations

from typing import Annotated

import typer

from runtime.cli import api, dlq, metrics, orgs, stack, store, topics, worker
from runtime.cli.errors import OneSentenceGroup

app = typer.Typer(
    cls=OneSentenceGroup,  # any failure is one sentence on stderr (runtime/cli/errors.py)
    no_args_is_help=True,
    add_completion=False,
    help="Monitor the voice pipeline.",
)
for group in (worker, store, api, orgs, dlq, topics, stack):
    group.register(app)
app.add_typer(metrics.app, name="metrics")


@app.callback()
def options(
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
