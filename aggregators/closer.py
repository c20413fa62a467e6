"""The window closer (CONTRACT §6.1): one at a time, by lease, whatever the number of workers.

Each ``tick`` (every few seconds, with an injectable clock):

1. hold or renew the lease in Redis; without it, do nothing;
2. queue the hours whose close time the watermark or the wall clock has passed, and the days
   whose 24 hours are closed at D + 1 day + 1h30m, moving the pointers (fenced by the lease);
3. compute every queued window (closes, late-event re-emissions, oldest hour first), write
   its rows with a new, higher version, publish them, then unqueue it — unless it was marked
   again meanwhile. A closer that dies mid-way leaves its windows queued for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aggregators import snapshots
from aggregators.snapshot_rows import DAILY, HOURLY, SnapshotSet, StageSnapshot, message
from voicemon import keys, telemetry, windows
from voicemon.event import RAW_RETENTION_MS
from voicemon.publisher import KafkaPublisher, delivered
from voicemon.settings import Settings
from voicemon.store import Client
from voicemon.window_state import Pointers, WindowState, window_member
from voicemon.windows import DAY_MS, HOUR_MS

log = logging.getLogger("voicemon.closer")
PUBLISH_TIMEOUT_S = 30.0  # a snapshot record unacknowledged this long fails its window's emit

Publish = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CloserConfig:
    stages: Sequence[str]
    partitions: int
    grace_ms: int = 30 * 60_000
    debounce_ms: int = 5_000
    lease_ttl_ms: int = 30_000
    max_windows_per_tick: int = 72


@dataclass(slots=True)
class TickReport:
    leader: bool
    queued: list[str] = field(default_factory=list)
    emitted: list[str] = field(default_factory=list)


def initial_pointers(now_ms: int) -> Pointers:
    """Where a closer with no history starts: the oldest hour whose raw events are all still
    retained, and the first day whose every hour it will close."""
    oldest = now_ms - RAW_RETENTION_MS
    first_hour = windows.hour_start(oldest + HOUR_MS - 1)
    first_day = windows.day_start(first_hour + DAY_MS - 1)
    return Pointers(first_hour, first_day, first_day)


def snapshot_messages(snapshot_set: SnapshotSet) -> list[tuple[bytes, bytes]]:
    """One record per snapshot row, carrying the stage rows of the same scope."""
    stages: dict[str, list[StageSnapshot]] = {}
    for row in snapshot_set.stage_snapshots:
        stages.setdefault(row.organization_id, []).append(row)
    return [message(row, stages.get(row.organization_id, [])) for row in snapshot_set.snapshots]


class WindowCloser:
    def __init__(
        self,
        state: WindowState,
        store: Client,
        publish: Publish,
        config: CloserConfig,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self._state = state
        self._store = store
        self._publish = publish
        self._config = config
        self._clock = clock
        self.owner = owner or f"closer-{uuid.uuid4().hex[:12]}"
        self._first_closes: set[str] = set()  # hours this closer queued for their first close

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def tick(self) -> TickReport:
        now = self._now_ms()
        if not await self._state.hold_lease(self.owner, self._config.lease_ttl_ms):
            telemetry.CLOSER.lost_lease()
            return TickReport(leader=False)
        telemetry.CLOSER.leader = True
        report = TickReport(leader=True)
        report.queued = await self._queue_due(now)
        ready = now - self._config.debounce_ms
        for window in (await self._state.dirty(ready))[: self._config.max_windows_per_tick]:
            if not await self._state.hold_lease(self.owner, self._config.lease_ttl_ms):
                break
            if await self._keeps(window.period_type, window.start_ms, now):
                log.warning("kept the snapshot of %s: its raw events may be partly deleted",
                            window.member)  # fmt: skip
            else:
                await self.emit(window.period_type, window.start_ms, now)
                report.emitted.append(window.member)
                if window.member in self._first_closes:
                    self._first_closes.discard(window.member)
                    telemetry.CLOSER.close_delay_s = (now - window.start_ms - HOUR_MS) / 1000
            await self._state.done(window)
        return report

    def recomputable(self, hour_ms: int, now_ms: int) -> bool:
        """Whether every raw event of the hour is surely still retained (CONTRACT §6): the hour
        starts no earlier than 48 h minus the grace before now."""
        return hour_ms >= now_ms - RAW_RETENTION_MS + self._config.grace_ms

    async def _keeps(self, period_type: str, start_ms: int, now_ms: int) -> bool:
        """An hour closed before whose raw events may be partly gone keeps its snapshot."""
        if period_type != HOURLY or self.recomputable(start_ms, now_ms):
            return False
        return await asyncio.to_thread(snapshots.exists, self._store, HOURLY, start_ms)

    async def _queue_due(self, now: int) -> list[str]:
        watermark = windows.global_watermark(
            await self._state.watermarks(), self._config.partitions
        )
        if watermark is not None:
            telemetry.CLOSER.watermark_lag_s = max(0, now - watermark) / 1000
        pointers = await self._state.pointers()
        if pointers is None:
            pointers = initial_pointers(now)
            if not await self._state.initialize(self.owner, pointers):
                return []
        next_hour, next_day = pointers.next_hour, pointers.next_day
        score = now - self._config.debounce_ms  # fresh closes need no debounce
        hours = windows.due_hours(next_hour, now, watermark, self._config.grace_ms)
        members = [window_member(HOURLY, hour) for hour in hours]
        if hours:
            next_hour = hours[-1] + HOUR_MS
            if not await self._state.queue(self.owner, keys.NEXT_HOUR, next_hour, members, score):
                return []
            self._first_closes.update(members)
        days = windows.due_days(next_day, now, next_hour)
        day_members = [window_member(DAILY, day) for day in days]
        if days and await self._state.queue(
            self.owner, keys.NEXT_DAY, days[-1] + DAY_MS, day_members, score
        ):
            members += day_members
        return members

    async def emit(self, period_type: str, start_ms: int, now: int) -> SnapshotSet:
        """Compute, write and publish one window's rows with a new version."""
        version = await self._state.next_version(now)
        compute = snapshots.compute_hour if period_type == HOURLY else snapshots.compute_day
        snapshot_set = await asyncio.to_thread(
            compute, self._store, start_ms, self._config.stages, version, now
        )
        await asyncio.to_thread(snapshots.write, self._store, snapshot_set)
        await self._publish(snapshot_messages(snapshot_set))
        telemetry.SNAPSHOTS_EMITTED.labels(period_type).inc(len(snapshot_set.snapshots))
        if period_type == HOURLY:
            await self._redo_closed_day(windows.day_start(start_ms), now)
        log.info(
            "snapshot emitted",
            extra={"period_type": period_type, "period_start": windows.utc(start_ms).isoformat(),
                   "rows": len(snapshot_set.snapshots), "version": version},
        )  # fmt: skip
        return snapshot_set

    async def _redo_closed_day(self, day: int, now: int) -> None:
        pointers = await self._state.pointers()
        if pointers is not None and pointers.day_closed(day):
            await self._state.mark_dirty(window_member(DAILY, day), now - self._config.debounce_ms)

    async def holds_lease(self) -> bool:
        return await self._state.hold_lease(self.owner, self._config.lease_ttl_ms)

    async def release(self) -> None:
        await self._state.release_lease(self.owner)
        telemetry.CLOSER.lost_lease()


def build_closer(
    settings: Settings,
    state: WindowState,
    store: Client,
    publisher: KafkaPublisher,
    clock: Callable[[], float] = time.time,
) -> WindowCloser:
    """A closer wired to the settings: snapshots published with ``publisher``."""

    async def publish(records: list[tuple[bytes, bytes]]) -> None:
        """Return once the broker acknowledged every one of these records; raise otherwise."""
        topic = settings.snapshots_topic
        sent = [publisher.send(topic, value, key) for key, value in records]
        await delivered(sent, PUBLISH_TIMEOUT_S, topic)

    config = CloserConfig(
        stages=settings.stages,
        partitions=settings.topic_partitions,
        grace_ms=settings.close_grace_seconds * 1000,
        debounce_ms=int(settings.late_debounce_seconds * 1000),
    )
    return WindowCloser(state, store, publish, config, clock)
