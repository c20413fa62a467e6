"""``voicemon topics ensure``: create or verify the topics of CONTRACT §2."""

from __future__ import annotations

import orjson
import typer
from rich.table import Table

from runtime.cli import tables
from runtime.cli.common import AsJson, console, fail, settings
from runtime.cli.preflight import check_kafka
from voicemon import topics
from voicemon.kafka_client import confluent_security

topics_app = typer.Typer(no_args_is_help=True, help="The Kafka topics of voicemon.")


@topics_app.command("ensure")
def topics_ensure(as_json: AsJson = False) -> None:
    """Create the missing topics (partitions, replication, compaction of the directory) and
    report drift on existing ones without changing them; exit 1 on drift."""
    config = settings()
    check_kafka(config)
    try:
        reports = topics.ensure(
            config.kafka_bootstrap, topics.topic_specs(config), confluent_security(config)
        )
    except topics.TopicsError as error:
        fail(str(error))
    if as_json:
        print(orjson.dumps([{"topic": r.name, "state": r.state, "detail": r.detail}
                            for r in reports]).decode())  # fmt: skip
    else:
        console.print(topics_table(reports))
    if any(report.state == "drift" for report in reports):
        raise typer.Exit(1)


def topics_table(reports: list[topics.TopicReport]) -> Table:
    table = tables.table("topics", ("topic", "state", "detail"), numbers=())
    for report in reports:
        table.add_row(report.name, report.state, report.detail)
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(topics_app, name="topics")
