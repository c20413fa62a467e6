"""The ingest agent: batches from the events topic made durable, then acked in offset order.

Batches come from ``noack_take``; each is made durable by ``Ingest.process`` (retried with
backoff while a dependency is down, so the worker pauses instead of crash-looping) and only
then acked, in arrival order — offset order within each partition — so Faust commits
offsets that follow durable writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.app import WorkerApp
from consumers.batch import Message
from consumers.ingest import Ingest
from voicemon import telemetry
from voicemon.health import Outage, until_done
from voicemon.settings import Settings

log = logging.getLogger("voicemon.worker")
STALL_SECONDS = 30.0  # a batch in progress this long makes the worker not ready


@dataclass(slots=True)
class IngestProgress:
    """What the agent shares with the worker's timers and probes."""

    outage: Outage = field(default_factory=lambda: Outage("ingest"))
    batch_started: float | None = None  # monotonic start of the batch in progress
    ingesting: asyncio.Lock = field(default_factory=asyncio.Lock)  # batches and rebuilds

    def stalled(self) -> bool:
        """A batch has been in progress longer than STALL_SECONDS (a hung dependency)."""
        started = self.batch_started
        return started is not None and time.monotonic() - started > STALL_SECONDS


def add_ingest_agent(
    worker: WorkerApp,
    settings: Settings,
    open_ingest: Callable[[], Awaitable[Ingest]],
    progress: IngestProgress,
) -> None:
    """Register the agent on the worker's events topic."""

    async def ingest_events(stream: Any) -> None:
        ingest = await open_ingest()
        async for events in stream.noack_take(
            settings.batch_max_messages, within=settings.batch_max_seconds
        ):
            for chunk in chunks(events, settings.batch_max_bytes):
                messages = [message_of(e.message) for e in chunk]
                await _make_durable(ingest, messages, progress)
                for event in chunk:
                    event.ack()

    worker.app.agent(worker.events_topic, name="voicemon.ingest")(ingest_events)


async def _make_durable(
    ingest: Ingest, messages: Sequence[Message], progress: IngestProgress
) -> None:
    started = time.perf_counter()
    async with progress.ingesting:
        progress.batch_started = time.monotonic()
        try:
            outcome = await until_done(progress.outage, lambda: ingest.process(messages))
        finally:
            progress.batch_started = None
    telemetry.BATCH_SECONDS.observe(time.perf_counter() - started)
    log.debug("batch durable: %s", outcome)


LOG_APPEND_TIME = 1  # aiokafka's timestamp_type of the broker's log-append time


def message_of(record: Any) -> Message:
    """What ingest needs of a Faust message (its timestamp is in seconds)."""
    timestamp = None if record.timestamp is None else round(record.timestamp * 1000)
    return Message(record.partition, record.offset, record.key, record.value, timestamp,
                   record.timestamp_type == LOG_APPEND_TIME)  # fmt: skip


def chunks(events: Sequence[Any], max_bytes: int) -> list[Sequence[Any]]:
    """Consecutive runs of ``events`` whose message values hold at most ``max_bytes`` (one
    oversized message makes a run of its own): batches of big batch messages stay small in
    memory and are committed as they go."""
    runs: list[Sequence[Any]] = []
    start, size = 0, 0
    for index, event in enumerate(events):
        length = len(event.message.value or b"")
        if index > start and size + length > max_bytes:
            runs.append(events[start:index])
            start, size = index, 0
        size += length
    if start < len(events):
        runs.append(events[start:])
    return runs
