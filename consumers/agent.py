"""The ingest agent and the worker's web endpoints.

Batches come from ``noack_take``; each is made durable by ``Ingest.process`` (retried with
backoff while a dependency is down, so the worker pauses instead of crash-looping) and only
then acked, in offset order, so Faust commits offsets that follow durable writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from aggregators import retention
from aggregators.closer import WindowCloser, build_closer
from consumers.app import app, events_topic, settings
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest, Message
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import RollingCounters
from voicemon import store, telemetry
from voicemon.producer import KafkaPublisher
from voicemon.window_state import WindowState

log = logging.getLogger("voicemon.worker")


class WorkerState:
    """The worker's clients, opened once when the agent starts."""

    def __init__(self) -> None:
        self.redis: Redis | None = None
        self.store: store.Client | None = None
        self.ingest: Ingest | None = None
        self.closer: WindowCloser | None = None
        self.last_offsets: dict[int, int] = {}
        self.outage: str | None = None

    async def open(self) -> Ingest:
        if self.ingest is None:
            self.store = await asyncio.to_thread(
                store.connect, settings.clickhouse_dsn.get_secret_value()
            )
            await asyncio.to_thread(store.migrate, self.store)
            self.redis = Redis.from_url(settings.redis_url.get_secret_value())
            self.closer = build_closer(settings, WindowState(self.redis), self.store)
            self.ingest = Ingest(
                RollingCounters(self.redis),
                RawWriter(self.store),
                DeadLetters(KafkaPublisher(settings.kafka_bootstrap), settings.dlq_topic),
                WindowState(self.redis),
                settings.stages,
            )
        return self.ingest


state = WorkerState()


def _on_retry(retry_state: RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome else None
    reason = f"{type(error).__name__}: {error}"[:300]
    if state.outage is None:
        log.error("batch not durable, pausing consumption and retrying: %s", reason)
    state.outage = reason


async def _make_durable(ingest: Ingest, messages: Sequence[Message]) -> None:
    started = time.perf_counter()
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.25, max=15), before_sleep=_on_retry, reraise=True
    ):
        with attempt:
            outcome = await ingest.process(messages)
    if state.outage is not None:
        log.warning("dependencies back, consumption resumed")
        state.outage = None
    telemetry.BATCH_SECONDS.observe(time.perf_counter() - started)
    log.debug("batch durable: %s", outcome)


@app.agent(events_topic)
async def ingest_events(stream: Any) -> None:
    ingest = await state.open()
    async for events in stream.noack_take(
        settings.batch_max_messages, within=settings.batch_max_seconds
    ):
        messages = [
            Message(e.message.partition, e.message.offset, e.message.key, e.message.value)
            for e in events
        ]
        await _make_durable(ingest, messages)
        for event in events:  # in arrival order, i.e. offset order within each partition
            event.ack()
        for message in messages:
            state.last_offsets[message.partition] = message.offset


@app.timer(settings.closer_interval_seconds)  # type: ignore[untyped-decorator]
async def close_windows() -> None:
    if state.closer is None or not settings.closer_enabled:
        return
    try:
        report = await state.closer.tick()
    except Exception as error:  # an outage pauses closing; the next tick retries
        log.error("window closer tick failed: %s: %s", type(error).__name__, str(error)[:300])
        return
    if report.emitted:
        log.info("windows emitted: %s", ", ".join(report.emitted))


@app.crontab("30 4 * * 0", timezone=UTC)
async def weekly_retention() -> None:
    """The seed's Sunday 04:30 UTC cleanup, run by whichever worker holds the closer lease
    (TTLs delete continuously; this forces what they have not done yet)."""
    if state.closer is None or state.store is None or not await state.closer.holds_lease():
        return
    deleted = await asyncio.to_thread(retention.run, state.store, int(time.time() * 1000))
    log.info("weekly retention run: %s", deleted)


@app.timer(5.0)  # type: ignore[untyped-decorator]
async def report_consumer_lag() -> None:
    for tp in app.consumer.assignment():
        if tp.topic != events_topic.get_topic_name():
            continue
        last = state.last_offsets.get(tp.partition)
        highwater = app.consumer.highwater(tp)
        if last is not None and highwater is not None:
            telemetry.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - last - 1))


@app.page("/metrics")
async def metrics(web: Any, request: Any) -> Any:
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/healthz")
async def healthz(web: Any, request: Any) -> Any:
    return web.json({"status": "ok"})


@app.page("/readyz")
async def readyz(web: Any, request: Any) -> Any:
    checks = {
        "redis": await _redis_ok(),
        "clickhouse": await _store_ok(),
        "ingest": state.outage is None,
    }
    ready = all(checks.values())
    return web.json({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def _redis_ok() -> bool:
    try:
        return state.redis is not None and bool(await state.redis.ping())
    except Exception:
        return False


async def _store_ok() -> bool:
    try:
        return state.store is not None and bool(
            await asyncio.to_thread(state.store.command, "SELECT 1")
        )
    except Exception:
        return False


def run_worker(loglevel: str = "info") -> None:
    """Start the Faust worker (blocks until stopped)."""
    from faust import Worker

    Worker(app, loglevel=loglevel).execute_from_commandline()
