"""``voicemon orgs import``: the organization directory from a CSV, published to the
organizations topic (the directory's one source of truth: the workers' directory agent reads
it into the store) and written to the store at once."""

from __future__ import annotations

from concurrent.futures import wait
from pathlib import Path
from typing import Annotated

import typer

from aggregators.directory import organizations
from runtime.cli.common import console, fail, open_store, settings
from runtime.cli.preflight import check_kafka
from voicemon import store, store_migrations
from voicemon.kafka_client import confluent_logging, confluent_security
from voicemon.publisher import KafkaPublisher

PUBLISH_TIMEOUT_S = 30.0

orgs_app = typer.Typer(no_args_is_help=True, help="The organization directory.")


@orgs_app.command("import")
def orgs_import(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    encoding: Annotated[
        str, typer.Option(help="The file's text encoding (a UTF-8 byte-order mark is fine).")
    ] = "utf-8",
) -> None:
    """Load organization names from a CSV of 'organization_id,name' rows: publish each to the
    organizations topic, then write them to the store."""
    try:
        names = organizations.read_csv(path, encoding)
    except organizations.DirectoryError as error:
        fail(str(error))
    config = settings()
    check_kafka(config)
    publisher = KafkaPublisher(
        config.kafka_bootstrap, **confluent_security(config), **confluent_logging()
    )
    topic = config.organizations_topic
    sent = [publisher.send(topic, organizations.directory_value(org, name), org.encode())
            for org, name in names.items()]  # fmt: skip
    done, unanswered = wait(sent, timeout=PUBLISH_TIMEOUT_S)
    publisher.close(0)
    failures = [str(error) for error in (future.exception() for future in done) if error]
    if failures or unanswered:
        why = failures[0] if failures else f"no answer within {PUBLISH_TIMEOUT_S:.0f} s"
        fail(f"the organizations topic {topic} did not take the names ({why}); run 'voicemon "
             "topics ensure' and check the broker and this client's ACLs; nothing was written "
             "to the store")  # fmt: skip
    client = open_store()
    try:
        store_migrations.migrate(client, config.clickhouse_cluster)
    except store.StoreError as error:
        fail(str(error))
    count = organizations.upsert(client, names)
    console.print(f"imported {count} organization(s) to {config.organizations_topic} and the store")


def register(app: typer.Typer) -> None:
    app.add_typer(orgs_app, name="orgs")
