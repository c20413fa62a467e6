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
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from aggregators import organizations, retention
from aggregators.api import create_app
from aggregators.closer import WindowCloser, build_closer
from aggregators.counter_rebuild import rebuilt_buckets
from aggregators.serve import server
from consumers.app import app, events_topic, organizations_topic, settings
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest, Message
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import RollingCounters
from voicemon import store, telemetry
from voicemon.producer import KafkaPublisher
from voicemon.window_state import WindowState

log = logging.getLogger("voicemon.worker")
STALL_SECONDS = 30.0  # a batch in progress this long makes the worker not ready
READINESS_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Resources:
    """The worker's clients, opened once when the first agent starts; a counting-only
    worker has no store and no closer."""

    redis: Redis
    ingest: Ingest
    store: store.Client | None
    closer: WindowCloser | None


class WorkerState:
    def __init__(self) -> None:
        self.resources: Resources | None = None
        self.last_offsets: dict[int, int] = {}
        self.outage: str | None = None
        self.closer_outage: str | None = None
        self.batch_started: float | None = None  # monotonic start of the batch in progress
        self.ingesting = asyncio.Lock()  # batches and counter rebuilds take turns
        self._opening = asyncio.Lock()

    def stalled(self) -> bool:
        """A batch has been in progress longer than STALL_SECONDS (a hung dependency)."""
        started = self.batch_started
        return started is not None and time.monotonic() - started > STALL_SECONDS

    async def open(self) -> Resources:
        async with self._opening:
            if self.resources is None:
                self.resources = await _open_resources()
            return self.resources


async def _open_resources() -> Resources:
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    window_state = WindowState(redis)
    client = closer = None
    if settings.stores:
        client = await asyncio.to_thread(store.connect, settings.clickhouse_dsn.get_secret_value())
        await asyncio.to_thread(store.migrate, client)
        closer = build_closer(settings, window_state, client)
    dead_letters = (
        DeadLetters(
            KafkaPublisher(settings.kafka_bootstrap), settings.kafka_bootstrap, settings.dlq_topic
        )
        if settings.counts
        else None
    )
    ingest = Ingest(
        RollingCounters(redis),
        window_state,
        settings.stages,
        dead_letters=dead_letters,
        raw_writer=None if client is None else RawWriter(client),
    )
    return Resources(redis, ingest, client, closer)


state = WorkerState()


def _on_retry(retry_state: RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome else None
    reason = f"{type(error).__name__}: {error}"[:300]
    if state.outage is None:
        log.error("batch not durable, pausing consumption and retrying: %s", reason)
    state.outage = reason


async def _make_durable(ingest: Ingest, messages: Sequence[Message]) -> None:
    started = time.perf_counter()
    async with state.ingesting:
        state.batch_started = time.monotonic()
        try:
            async for attempt in AsyncRetrying(
                wait=wait_exponential(multiplier=0.25, max=15), before_sleep=_on_retry, reraise=True
            ):
                with attempt:
                    outcome = await ingest.process(messages)
        finally:
            state.batch_started = None
    if state.outage is not None:
        log.warning("dependencies back, consumption resumed")
        state.outage = None
    telemetry.BATCH_SECONDS.observe(time.perf_counter() - started)
    log.debug("batch durable: %s", outcome)


@app.agent(events_topic)
async def ingest_events(stream: Any) -> None:
    ingest = (await state.open()).ingest
    async for events in stream.noack_take(
        settings.batch_max_messages, within=settings.batch_max_seconds
    ):
        for chunk in chunks(events, settings.batch_max_bytes):
            messages = [
                Message(e.message.partition, e.message.offset, e.message.key, e.message.value)
                for e in chunk
            ]
            await _make_durable(ingest, messages)
            for event in chunk:  # in arrival order, i.e. offset order within each partition
                event.ack()
            for message in messages:
                state.last_offsets[message.partition] = message.offset


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


@app.agent(organizations_topic)
async def update_directory(stream: Any) -> None:
    """Keep ``voicemon.organizations`` current from the compacted topic (null deletes)."""
    directory = (await state.open()).store
    if directory is None:  # a counting-only worker leaves the directory to the store worker
        return
    async for events in stream.noack_take(500, within=1.0):
        names: dict[str, str | None] = {}
        for event in events:
            record = directory_record(event.message.key, event.message.value)
            if record is None:
                log.warning("ignored a malformed organizations record at offset %s",
                            event.message.offset)  # fmt: skip
            else:
                names[record[0]] = record[1]
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.25, max=15), before_sleep=_on_retry, reraise=True
        ):
            with attempt:
                await asyncio.to_thread(organizations.upsert, directory, names)
        telemetry.ORGANIZATIONS_UPDATED.inc(len(names))
        for event in events:
            event.ack()


def directory_record(key: bytes | None, value: bytes | None) -> tuple[str, str | None] | None:
    """(organization_id, name) from a topic record; name None for a tombstone."""
    if value is None:
        org = (key or b"").decode("utf-8", "replace")
        return (org, None) if organizations.ORGANIZATION_ID.fullmatch(org) else None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    org_id, name = body.get("organization_id"), body.get("name")
    if not isinstance(org_id, str) or not organizations.ORGANIZATION_ID.fullmatch(org_id):
        return None
    return (org_id, name) if isinstance(name, str) and name else None


@app.task  # type: ignore[untyped-decorator]
async def serve_api() -> None:
    """With VOICEMON_API_ENABLED the worker also serves the query API (embedded store)."""
    if not settings.api_enabled:
        return
    resources = await state.open()
    if resources.store is None:
        log.error("VOICEMON_API_ENABLED needs a worker with a store (role all or store)")
        return
    application = create_app(settings, resources.store, resources.redis)
    log.info("query API on http://%s:%s", settings.api_bind, settings.api_port)
    await server(application, settings.api_bind, settings.api_port, embedded=True).serve()


@app.timer(settings.closer_interval_seconds)  # type: ignore[untyped-decorator]
async def close_windows() -> None:
    closer = state.resources.closer if state.resources else None
    if closer is None or not settings.closer_enabled:
        return
    try:
        report = await closer.tick()
    except Exception as error:  # an outage pauses closing; the next tick retries
        if state.closer_outage is None:
            log.error("window closing paused: %s: %s", type(error).__name__, str(error)[:300])
        state.closer_outage = type(error).__name__
        return
    if state.closer_outage is not None:
        log.warning("window closing resumed")
        state.closer_outage = None
    if report.emitted:
        log.info("windows emitted: %s", ", ".join(report.emitted))


@app.crontab("30 4 * * 0", timezone=UTC)
async def weekly_retention() -> None:
    """The seed's Sunday 04:30 UTC cleanup, run by whichever worker holds the closer lease
    (TTLs delete continuously; this forces what they have not done yet)."""
    resources = state.resources
    if resources is None or resources.closer is None or resources.store is None:
        return
    if not await resources.closer.holds_lease():
        return
    now_ms = int(time.time() * 1000)
    deleted = await asyncio.to_thread(
        retention.run, resources.store, now_ms, settings.clickhouse_cluster
    )
    log.info("weekly retention run: %s", deleted)


@app.timer(5.0)  # type: ignore[untyped-decorator]
async def rebuild_lost_counters() -> None:
    """If the rolling-counter keys were flushed, rebuild the window from raw events, with
    ingest paused so that the rebuilt numbers are exact (roles with a store only)."""
    resources = state.resources
    if resources is None or resources.store is None:
        return
    counters = RollingCounters(resources.redis)
    try:
        if not await counters.lost():
            return
        async with state.ingesting:
            now_ms = int(time.time() * 1000)
            buckets = await asyncio.to_thread(rebuilt_buckets, resources.store, now_ms)
            await counters.replace(buckets)
    except Exception as error:  # Redis or the store still down: the next tick retries
        log.debug("counter rebuild postponed: %s", type(error).__name__)
        return
    log.warning("rolling counters were missing; rebuilt %d bucket(s) from raw events",
                len(buckets))  # fmt: skip


@app.timer(5.0)  # type: ignore[untyped-decorator]
async def report_consumer_lag() -> None:
    """Lag of the input partitions this worker holds; a partition handed over is dropped."""
    held = set()
    for tp in app.consumer.assignment():
        if tp.topic != events_topic.get_topic_name():
            continue
        held.add(tp.partition)
        last = state.last_offsets.get(tp.partition)
        highwater = app.consumer.highwater(tp)
        if last is not None and highwater is not None:
            telemetry.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - last - 1))
    for partition in set(state.last_offsets) - held:
        del state.last_offsets[partition]
        telemetry.CONSUMER_LAG.remove(str(partition))


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
        "ingest": state.outage is None and not state.stalled(),
    }
    ready = all(checks.values())
    return web.json({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def _redis_ok() -> bool:
    try:
        resources = state.resources
        ping = resources.redis.ping() if resources is not None else None
        return ping is not None and bool(await asyncio.wait_for(ping, READINESS_TIMEOUT_S))
    except Exception:
        return False


async def _store_ok() -> bool:
    """True when the store answers, or when this worker has none (role counters)."""
    if state.resources is None:
        return False
    if state.resources.store is None:
        return True
    try:
        probe = asyncio.to_thread(state.resources.store.command, "SELECT 1")
        return bool(await asyncio.wait_for(probe, READINESS_TIMEOUT_S))
    except Exception:
        return False


def run_worker(loglevel: str = "info") -> None:
    """Start the Faust worker (blocks until stopped)."""
    from faust import Worker

    Worker(app, loglevel=loglevel).execute_from_commandline()
