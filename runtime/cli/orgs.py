"""``voicemon orgs import``: the organization directory from a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aggregators import organizations
from runtime.cli.common import console, fail, open_store, settings
from voicemon import store

orgs_app = typer.Typer(no_args_is_help=True, help="The organization directory.")


@orgs_app.command("import")
def orgs_import(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Load organization names from a CSV of 'organization_id,name' rows."""
    try:
        names = organizations.read_csv(path)
    except organizations.DirectoryError as error:
        fail(str(error))
    client = open_store()
    try:
        store.migrate(client, settings().clickhouse_cluster)
    except store.StoreError as error:
        fail(str(error))
    console.print(f"imported {organizations.upsert(client, names)} organization(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(orgs_app, name="orgs")
