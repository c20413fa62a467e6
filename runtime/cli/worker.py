"""``voicemon worker``."""

from __future__ import annotations

import sys

import typer

from runtime.cli.common import console, fail, settings
from voicemon import kafka_access


def worker(loglevel: str = "info") -> None:
    """Run the Faust worker: consume events into Redis and ClickHouse."""
    config = settings()
    try:  # a refused login or certificate ends the worker at once instead of idling forever
        kafka_access.check(config)
    except kafka_access.KafkaAccessError as error:
        fail(str(error))
    except kafka_access.KafkaUnreachable as error:  # an outage: the worker waits for Kafka
        console.print(f"[yellow]warning:[/yellow] {error}; the worker starts and waits for it")
    from runtime.worker import run_worker  # Faust is heavy: imported by this command only

    sys.argv = [sys.argv[0]]
    run_worker(config, loglevel)


def register(app: typer.Typer) -> None:
    app.command()(worker)
