"""``voicemon dlq-count``."""

from __future__ import annotations

import orjson
import typer

from runtime.cli.common import AsJson, settings
from runtime.cli.preflight import require_kafka
from voicemon.topics import message_count


def dlq_count(as_json: AsJson = False) -> None:
    """Messages in the DLQ topic."""
    require_kafka(settings().kafka_bootstrap)
    count = message_count(settings().kafka_bootstrap, settings().dlq_topic)
    print(orjson.dumps({"dlq_messages": count}).decode() if as_json else f"DLQ messages: {count:,}")


def register(app: typer.Typer) -> None:
    app.command("dlq-count")(dlq_count)
