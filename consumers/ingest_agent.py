"""The ingest agent: batches from the events topic made durable, then acked in offset order.

Batches come from ``noack_take``, split into chunks bounded by bytes. Each chunk is made
durable in two steps (``Ingest.count``, then ``Ingest.store``), each retried with backoff
while a dependency is down, so the worker pauses instead of crash-looping. The steps of
consecutive chunks overlap (``Overlap``): chunk k+1 is decoded and counted while chunk k is
stored. Counting stays in chunk order, and chunk k is acked, in offset order, once it is
stored and before chunk k+1 is, so Faust commits offsets that follow durable writes. A crash
between the steps leaves counted events without rows: their replay finds its own marks and
stores just those rows (``consumers.ingest``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from consumers.app import WorkerApp
from consumers.batch import BatchOutcome, Message
from consumers.ingest import Counted, Ingest
from voicemon import telemetry
from voicemon.health import Outage, until_done
from voicemon.settings import Settings

log = logging.getLogger("voicemon.worker")
STALL_SECONDS = 30.0  # a batch in progress this long makes the worker not ready


@dataclass(slots=True)
class IngestProgress:
    """What the agent shares with the worker's timers and probes."""

    outage: Outage = field(default_factory=lambda: Outage("ingest"))
    started: deque[float] = field(default_factory=deque)  # monotonic starts of batches in flight
    ingesting: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while any is
    pauses_wanted: int = 0

    def stalled(self) -> bool:
        """A batch has been in progress longer than STALL_SECONDS (a hung dependency)."""
        return bool(self.started) and time.monotonic() - self.started[0] > STALL_SECONDS

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Ingest paused with nothing in flight (a counter rebuild): the agent lets it in
        between two chunks."""
        self.pauses_wanted += 1
        try:
            async with self.ingesting:
                yield
        finally:
            self.pauses_wanted -= 1


class Overlap:
    """Two chunks in flight at most: one being counted while the one before is stored. When
    the last chunk in flight is stored, its offsets are committed at once (``commit``), not
    at the next commit interval: a replay after a crash starts from there."""

    def __init__(
        self,
        ingest: Ingest,
        progress: IngestProgress,
        commit: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._ingest = ingest
        self._progress = progress
        self._commit = commit
        self._storing: asyncio.Task[None] | None = None

    async def push(self, chunk: Sequence[Any]) -> None:
        """Count ``chunk``; once the chunk before it is stored and acked, store it (in the
        background: the caller goes on to the next chunk)."""
        progress = self._progress
        if progress.pauses_wanted:
            await self.drain()
        if not progress.started:
            await progress.ingesting.acquire()
        progress.started.append(time.monotonic())
        messages = [message_of(e.message) for e in chunk]
        counted = await until_done(progress.outage, lambda: self._ingest.count(messages))
        await self.drain()
        self._storing = asyncio.create_task(self._store(counted, chunk))

    async def drain(self) -> None:
        """Wait until the chunk being stored is stored and acked."""
        storing, self._storing = self._storing, None
        if storing is not None:
            await storing

    def cancel(self) -> None:
        """Abandon what is in flight (the agent stops); unacked chunks are consumed again."""
        if self._storing is not None:
            self._storing.cancel()
        if self._progress.started:
            self._progress.started.clear()
            self._progress.ingesting.release()

    async def _store(self, counted: Counted, chunk: Sequence[Any]) -> None:
        progress = self._progress
        first = [counted]

        def attempt() -> Awaitable[BatchOutcome]:
            if first:  # the first try stores what was counted; a retry redoes the batch
                return self._ingest.store(first.pop())
            return self._ingest.process(counted.messages)

        outcome = await until_done(progress.outage, attempt)
        for event in chunk:
            event.ack()
        telemetry.BATCH_SECONDS.observe(time.monotonic() - progress.started.popleft())
        log.debug("batch durable: %s", outcome)
        if progress.started:
            return
        progress.ingesting.release()
        if self._commit is not None:
            try:
                await self._commit()
            except Exception as error:  # the periodic commit tries again
                log.debug("commit after a durable batch postponed: %r", error)


def add_ingest_agent(
    worker: WorkerApp,
    settings: Settings,
    open_ingest: Callable[[], Awaitable[Ingest]],
    progress: IngestProgress,
) -> None:
    """Register the agent on the worker's events topic."""

    async def ingest_events(stream: Any) -> None:
        topics = {worker.events_topic.get_topic_name()}
        overlap = Overlap(await open_ingest(), progress, lambda: worker.app.commit(topics))
        try:
            async for events in stream.noack_take(
                settings.batch_max_messages, within=settings.batch_max_seconds
            ):
                for chunk in chunks(events, settings.batch_max_bytes):
                    await overlap.push(chunk)
        finally:
            overlap.cancel()

    worker.app.agent(worker.events_topic, name="voicemon.ingest")(ingest_events)


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
