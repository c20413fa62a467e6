"""``voicemon worker``."""

from __future__ import annotations

import sys

import typer

from runtime.cli.common import settings
from runtime.cli.preflight import check_kafka, check_topics


def worker() -> None:
    """Run the Faust worker: consume events into Redis and ClickHouse (logs: VOICEMON_LOG_FORMAT
    and VOICEMON_LOG_LEVEL)."""
    config = settings()
    # a refused login or certificate, or no broker, ends the worker at once (one sentence)
    check_kafka(config)  # instead of Faust idling or failing with a logged traceback
    check_topics(config)  # topics on which a rejection might not fit the DLQ (CONTRACT §2)
    from runtime.worker import run_worker  # Faust is heavy: imported by this command only

    sys.argv = [sys.argv[0]]
    run_worker(config)


def register(app: typer.Typer) -> None:
    app.command()(worker)
