"""``voicemon dlq-count``."""

from __future__ import annotations

import orjson
import typer

from runtime.cli.common import AsJson, check_kafka, settings
from voicemon.kafka_client import confluent_security
from voicemon.topics import message_count


def dlq_count(as_json: AsJson = False) -> None:
    """Messages in the DLQ topic."""
    config = settings()
    check_kafka(config)
    count = message_count(config.kafka_bootstrap, config.dlq_topic, confluent_security(config))
    print(orjson.dumps({"dlq_messages": count}).decode() if as_json else f"DLQ messages: {count:,}")


def register(app: typer.Typer) -> None:
    app.command("dlq-count")(dlq_count)
