"""The worker's timers, hosting work on a schedule: window closing, weekly retention, the
rolling-counter rebuild and the consumer-lag gauge."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC
from typing import TYPE_CHECKING

from aggregators.closing import retention
from consumers.app import WorkerApp
from consumers.counter_rebuild import rebuild_if_lost
from consumers.ingest_agent import IngestProgress
from consumers.lag import BrokerLag, LagUnavailable
from consumers.rolling_counters import RollingCounters
from voicemon import kafka_client, telemetry
from voicemon.settings import Settings

if TYPE_CHECKING:
    from runtime.worker import WorkerParts

log = logging.getLogger("voicemon.worker")
REBUILD_CHECK_SECONDS = 5.0
LAG_SECONDS = 10.0


def add_timers(
    worker: WorkerApp, settings: Settings, parts: WorkerParts, progress: IngestProgress
) -> None:
    app = worker.app
    closer_paused = False

    async def close_windows() -> None:
        nonlocal closer_paused
        closer = parts.opened.closer if parts.opened else None
        if closer is None or not settings.closer_enabled:
            return
        try:
            report = await closer.tick()
        except Exception as error:  # an outage pauses closing; the next tick retries
            if not closer_paused:
                log.error("window closing paused: %s: %s", type(error).__name__, str(error)[:300])
            closer_paused = True
            return
        if closer_paused:
            log.warning("window closing resumed")
            closer_paused = False
        if report.emitted:
            log.info("windows emitted: %s", ", ".join(report.emitted))

    async def release_lease(*_: object, **__: object) -> None:
        """A stopping worker hands the closer lease on at once instead of letting it expire."""
        closer = parts.opened.closer if parts.opened else None
        if closer is not None:
            try:
                await closer.release()
            except Exception as error:  # Redis down: the lease expires on its own
                log.warning("closer lease not released: %s", type(error).__name__)

    async def weekly_retention() -> None:
        """The seed's Sunday 04:30 UTC cleanup, run by whichever worker holds the closer lease
        (TTLs delete continuously; this forces what they have not done yet)."""
        opened = parts.opened
        if opened is None or opened.closer is None or opened.store is None:
            return
        if not await opened.closer.holds_lease():
            return
        now_ms = int(time.time() * 1000)
        deleted = await asyncio.to_thread(
            retention.run, opened.store, now_ms, settings.clickhouse_cluster
        )
        log.info("weekly retention run: %s", deleted)

    async def rebuild_lost_counters() -> None:
        """If the rolling-counter keys were flushed, rebuild them from raw events (roles with
        a store only)."""
        opened = parts.opened
        if opened is None or opened.store is None:
            return
        counters = RollingCounters(opened.resources.redis)
        now_ms = int(time.time() * 1000)
        try:
            rebuilt = await rebuild_if_lost(counters, opened.store, progress.paused, now_ms)
        except Exception as error:  # Redis or the store still down: the next tick retries
            log.debug("counter rebuild postponed: %s", type(error).__name__)
            return
        if rebuilt is not None:
            log.warning("rolling counters were missing; rebuilt %d bucket(s) from raw events",
                        rebuilt)  # fmt: skip

    broker_lag = BrokerLag(
        kafka_client.confluent_config(settings),
        settings.worker_group,
        settings.events_topic,
    )
    lag_unavailable = False

    async def report_consumer_lag() -> None:
        """The group's lag as the broker sees it, measured by every worker: it needs neither
        Redis nor the store, nor any partition held (see consumers/lag.py)."""
        nonlocal lag_unavailable
        try:
            offsets = await asyncio.to_thread(broker_lag.measure)
        except LagUnavailable as error:
            if not lag_unavailable:
                log.error("consumer lag not measured: %s", str(error)[:300])
            lag_unavailable = True
            telemetry.BROKER_OFFSETS.clear()
            return
        if lag_unavailable:
            log.warning("consumer lag measured again")
            lag_unavailable = False
        rows = [(o.partition, o.end, o.committed, o.lag) for o in offsets]
        telemetry.BROKER_OFFSETS.update(settings.worker_group, rows)

    app.timer(settings.closer_interval_seconds)(close_windows)
    app.on_before_shutdown.connect(release_lease)
    app.crontab("30 4 * * 0", timezone=UTC)(weekly_retention)
    app.timer(REBUILD_CHECK_SECONDS)(rebuild_lost_counters)
    app.timer(LAG_SECONDS)(report_consumer_lag)
