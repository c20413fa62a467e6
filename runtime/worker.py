"""The worker process: the Faust app from the settings, with its agents, timers and probes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

import faust

from aggregators.closing.closer import WindowCloser, build_closer
from aggregators.closing.window_state import WindowState
from aggregators.directory.agent import add_directory_agent
from aggregators.query.api import create_app
from aggregators.query.serve import server
from consumers.app import WorkerApp, build_app
from consumers.dead_letters import DeadLetters
from consumers.ingest import Ingest
from consumers.ingest_agent import IngestProgress, add_ingest_agent
from consumers.publish_once import OncePublisher
from consumers.raw_writer import RawWriter
from consumers.rolling_counters import RollingCounters
from consumers.store_leases import StoreLeases
from consumers.store_progress import StoreProgress
from consumers.stored_ids import StoredIds
from runtime import timers
from voicemon import health, logs, store, telemetry
from voicemon.health import Outage
from voicemon.kafka_client import confluent_logging, confluent_security
from voicemon.redis_client import Replication
from voicemon.resources import Resources, open_resources
from voicemon.settings import Settings

log = logging.getLogger("voicemon.worker")
# A worker stops within 10 s of SIGTERM whatever it waits on (CONTRACT §3.3): what a graceful
# stop has not finished by then is cut short; uncommitted work is consumed again after a
# restart and changes nothing (§3.1).
STOP_DEADLINE_S = 8.0


@dataclass(frozen=True, slots=True)
class Parts:
    """The worker's clients and the objects built on them; a counting-only worker has no
    store and no closer."""

    resources: Resources
    ingest: Ingest
    closer: WindowCloser | None

    @property
    def store(self) -> store.Client | None:
        return self.resources.store


class WorkerParts:
    """Opens the parts once, when the first agent, task or probe asks for them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.opened: Parts | None = None
        self._opening = asyncio.Lock()

    async def get(self) -> Parts:
        async with self._opening:
            if self.opened is None:
                self.opened = await asyncio.to_thread(self._open)
            return self.opened

    def _open(self) -> Parts:
        settings = self.settings
        resources = open_resources(settings, with_store=settings.stores)
        closer = None
        if resources.store is not None:
            state = WindowState(resources.redis)
            closer = build_closer(settings, state, resources.store, resources.publisher)
        dlq = DeadLetters(resources.publisher, settings.kafka_bootstrap, settings.dlq_topic,
                          security=confluent_security(settings) | confluent_logging())  # fmt: skip
        raw_writer = None if resources.store is None else RawWriter(resources.store)
        stored_ids = None if resources.store is None else StoredIds(resources.store)
        ingest = Ingest(
            RollingCounters(resources.redis),
            StoreProgress(resources.redis),
            settings.stages,
            dead_letters=OncePublisher(resources.redis, dlq),
            raw_writer=raw_writer,
            stored_ids=stored_ids,
            counts=settings.counts,
            leases=StoreLeases(resources.redis),
            replication=Replication(
                resources.redis, settings.redis_wait_replicas, settings.redis_wait_timeout_ms
            ),
        )
        return Parts(resources, ingest, closer)


def build_worker(settings: Settings) -> WorkerApp:
    """The Faust app with every agent, timer, task and page of the worker registered."""
    worker = build_app(settings)
    telemetry.WORKER_INFO.labels(settings.worker_role, settings.worker_group).set(1)
    for dependency in health.DEPENDENCIES:  # 0 from the start, not absent until an outage
        telemetry.INGEST_PAUSED.labels(dependency).set(0)
    parts = WorkerParts(settings)
    progress = IngestProgress()
    directory_outage = Outage("directory")

    async def open_ingest() -> Ingest:
        return (await parts.get()).ingest

    async def open_store() -> store.Client | None:
        return (await parts.get()).store

    add_ingest_agent(worker, settings, open_ingest, progress)
    add_directory_agent(worker.app, worker.organizations_topic, open_store, directory_outage)
    timers.add_timers(worker, settings, parts, progress)
    _add_api(worker.app, settings, parts)
    _add_probes(worker.app, parts, progress, directory_outage)
    return worker


def _add_api(app: Any, settings: Settings, parts: WorkerParts) -> None:
    async def serve_api() -> None:
        """With VOICEMON_API_ENABLED the worker also serves the query API (embedded store)."""
        if not settings.api_enabled:
            return
        opened = await parts.get()
        if opened.store is None:
            log.error("VOICEMON_API_ENABLED needs a worker with a store (role all or store)")
            return
        application = create_app(settings, opened.store, opened.resources.redis)
        log.info("query API on http://%s:%s", settings.api_bind, settings.api_port)
        await server(
            application, settings.api_bind, settings.api_port, embedded=True, settings=settings
        ).serve()

    app.task(serve_api)


def _add_probes(app: Any, parts: WorkerParts, progress: IngestProgress, directory: Outage) -> None:
    async def checks() -> dict[str, bool]:
        opened = parts.opened
        if opened is None:
            found = {"redis": False, "clickhouse": False}
        else:
            found = await health.dependency_checks(opened.resources.redis, opened.store)
        found["ingest"] = not progress.outage.active and not progress.stalled()
        found["directory"] = not directory.active
        return found

    def page(path: str) -> Any:
        async def answer(web: Any, request: Any) -> Any:
            found = await health.probe(path, checks)
            if found.body is None:
                return web.json(found.json, status=found.status)
            return web.bytes(found.body, content_type=found.media_type.split(";")[0])

        return answer

    for path in health.PROBE_PATHS:
        app.page(path)(page(path))


class Worker(faust.Worker):
    """Faust's worker, whose stop on SIGTERM or SIGINT has a deadline: Faust's graceful stop
    waits for whatever its agents, timers and threads wait on (a DLQ delivery, a store call
    that hangs, a Redis outage's backoff); ``STOP_DEADLINE_S`` after the signal the process
    exits anyway. The deadline is armed by a Python-level handler, in the main thread, so
    an event loop busy with something else does not delay it; the loop still receives the
    signal (through its wakeup fd) and starts the graceful stop."""

    def _install_signal_handlers_unix(self) -> None:
        super()._install_signal_handlers_unix()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _arm_stop_deadline)


_deadline_lock = threading.Lock()
_deadline: list[threading.Timer] = []


def _arm_stop_deadline(signum: int, frame: FrameType | None) -> None:
    """On the first stop signal: a daemon timer that ends the process ``STOP_DEADLINE_S``
    later unless it has exited by then (exit status 128 + the signal's number)."""
    del frame
    with _deadline_lock:
        if _deadline:
            return
        timer = threading.Timer(STOP_DEADLINE_S, _stop_now, (signum,))
        timer.daemon = True
        _deadline.append(timer)
    timer.start()


def _stop_now(signum: int) -> None:
    log.error(
        "still stopping %.0f s after %s; exiting now (work not yet committed is consumed "
        "again after a restart)", STOP_DEADLINE_S, signal.Signals(signum).name,
    )  # fmt: skip
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(128 + signum)


def run_worker(settings: Settings) -> None:
    """Start the Faust worker (blocks until stopped, or ``STOP_DEADLINE_S`` after a stop
    signal at the latest), logging as the settings say (voicemon/logs.py); with JSON logs,
    Faust's start-up banner is left out (it is a table for a terminal) and whatever is
    printed goes through logging too."""
    worker = build_worker(settings)
    Worker(
        worker.app,
        loglevel=settings.log_level,
        logging_config=logs.logging_config(settings),
        quiet=settings.log_format == "json",
    ).execute_from_commandline()
