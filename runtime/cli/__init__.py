"""The ``voicemon`` command line: one module per group of commands."""

from __future__ import annotations

import typer

from runtime.cli import api, dlq, metrics, orgs, stack, store, topics, worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Monitor the voice pipeline.")
for group in (worker, store, api, orgs, dlq, topics, stack):
    group.register(app)
app.add_typer(metrics.app, name="metrics")


def main() -> None:
    app()
