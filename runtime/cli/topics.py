"""``voicemon topics ensure``: create or verify the topics of CONTRACT §2."""

from __future__ import annotations

import orjson
import typer
from rich.table import Table

from runtime.cli.common import AsJson, console, fail, settings
from runtime.cli.preflight import require_kafka
from voicemon import topics

topics_app = typer.Typer(no_args_is_help=True, help="The Kafka topics of voicemon.")


@topics_app.command("ensure")
def topics_ensure(as_json: AsJson = False) -> None:
    """Create the missing topics (partitions, replication, compaction of the directory) and
    report drift on existing ones without changing them; exit 1 on drift."""
    config = settings()
    require_kafka(config.kafka_bootstrap)
    try:
        reports = topics.ensure(config.kafka_bootstrap, topics.topic_specs(config))
    except topics.TopicsError as error:
        fail(str(error))
    if as_json:
        print(orjson.dumps([{"topic": r.name, "state": r.state, "detail": r.detail}
                            for r in reports]).decode())  # fmt: skip
    else:
        table = Table(title="topics")
        for column in ("topic", "state", "detail"):
            table.add_column(column, overflow="fold")
        for report in reports:
            table.add_row(report.name, report.state, report.detail)
        console.print(table)
    if any(report.state == "drift" for report in reports):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(topics_app, name="topics")
