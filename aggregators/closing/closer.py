"""The window closer (CONTRACT §6.1): one at a time, by lease, whatever the number of workers.

Each ``tick`` (every few seconds, with an injectable clock):

1. hold or renew the lease in Redis; without it, do nothing;
2. publish again every window whose records were kept as written-unpublished (below) by this
   closer or a predecessor that died, before anything else;
3. queue the hours whose close time the watermark or the wall clock has passed, and the days
   whose 24 hours are closed at D + 1 day + 1h30m, moving the pointers (fenced by the lease);
4. compute every queued window (closes, late-event re-emissions, oldest hour first) and emit
   it, unless its inputs may be partly gone and it has a row already (it keeps that row).

Emitting a window is four steps, each safe to die after: compute its rows with a new, higher
version and keep its records in Redis as written-unpublished (``WindowState.hold_unpublished``);
write the rows; publish the records; once the broker acknowledged every one of them, forget
them, unqueue the window and queue its day again if closed, in one step
(``WindowState.published``). A successor finds the kept records and writes the rows that are
missing and publishes them, with the same version, however late it comes. A window whose
records cannot be published (too large for the topic, refused) stays kept and queued; the
others go on closing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aggregators.closing import snapshots
from aggregators.closing.window_state import Pointers, Unpublished, WindowState, window_member
from aggregators.snapshot_rows import (
    DAILY,
    HOURLY,
    RECORD_OVERHEAD_BYTES,
    SnapshotSet,
    StageSnapshot,
    message,
    worst_case_record_bytes,
)
from voicemon import keys, telemetry, topics, windows
from voicemon.event import RAW_RETENTION_MS
from voicemon.kafka_client import confluent_security
from voicemon.publisher import KafkaPublisher, delivered
from voicemon.settings import Settings
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS

log = logging.getLogger("voicemon.closer")
PUBLISH_TIMEOUT_S = 30.0  # a snapshot record unacknowledged this long fails its window's emit

# Publishes records; returns once the broker acknowledged every one, raises otherwise.
Publish = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # a topic's max.message.bytes unless set
HOURLY_RETENTION_MS = 7 * DAY_MS  # hourly rows, by period start (CONTRACT §6)


class CloserError(Exception):
    """The window closer cannot run as configured. Operator action: see the message."""


class NotPublished(CloserError):
    """A window's records were not all acknowledged; they stay kept for the next tick."""


@dataclass(frozen=True, slots=True)
class CloserConfig:
    stages: Sequence[str]
    partitions: int
    grace_ms: int = 30 * 60_000
    debounce_ms: int = 5_000
    lease_ttl_ms: int = 30_000
    max_windows_per_tick: int = 72
    max_record_bytes: int = KAFKA_DEFAULT_MAX_MESSAGE_BYTES  # the snapshot topic's limit


@dataclass(slots=True)
class TickReport:
    leader: bool
    queued: list[str] = field(default_factory=list)
    emitted: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)  # kept records, now acknowledged
    unpublished: list[str] = field(default_factory=list)  # windows to publish next tick
    kept: list[str] = field(default_factory=list)  # inputs partly gone: the row stays


def check_record_limit(stages: Sequence[str], max_record_bytes: int, topic: str) -> None:
    """Raise CloserError unless the largest snapshot record fits ``topic``."""
    worst = worst_case_record_bytes(stages)
    if worst > max_record_bytes:
        raise CloserError(
            f"a snapshot record with {len(stages)} stage(s) can reach {worst:,} bytes but topic "
            f"{topic} takes at most {max_record_bytes:,} (max.message.bytes): raise the "
            "topic's max.message.bytes or configure fewer stages"
        )


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
        self._fence = self.owner  # '' (set by ``unfenced``): may emit without the lease

    def unfenced(self) -> WindowCloser:
        """This closer, emitting without holding the lease (``voicemon replay``)."""
        self._fence = ""
        return self

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def tick(self) -> TickReport:
        now = self._now_ms()
        if not await self._state.hold_lease(self.owner, self._config.lease_ttl_ms):
            telemetry.CLOSER.lost_lease()
            return TickReport(leader=False)
        telemetry.CLOSER.leader = True
        report = TickReport(leader=True)
        await self._republish(report, now)
        report.queued = await self._queue_due(now)
        ready = now - self._config.debounce_ms
        blocked = set(report.unpublished)  # its kept records must reach the topic first
        queued = [w for w in await self._state.dirty(ready) if w.member not in blocked]
        for window in queued[: self._config.max_windows_per_tick]:
            if not await self._state.hold_lease(self.owner, self._config.lease_ttl_ms):
                break
            kept = await self._keeps(window.period_type, window.start_ms, now)
            if kept is not None:
                log.warning("%s %s", window.member, kept)
                report.kept.append(window.member)
                await self._state.done(window)
                continue
            try:
                if await self.emit(window.period_type, window.start_ms, now, window.generation):
                    report.emitted.append(window.member)
            except NotPublished:
                report.unpublished.append(window.member)
                continue
            if window.member in self._first_closes:
                self._first_closes.discard(window.member)
                telemetry.CLOSER.close_delay_s = (now - window.start_ms - HOUR_MS) / 1000
        return report

    async def _republish(self, report: TickReport, now: int) -> None:
        """Write (if missing) and publish every window kept as written-unpublished."""
        for entry in await self._state.unpublished():
            try:
                await asyncio.to_thread(snapshots.write_records, self._store, entry.records)
                await self._send(entry, now)
            except NotPublished:
                report.unpublished.append(entry.member)
            else:
                report.republished.append(entry.member)
                log.info("kept snapshot records published",
                         extra={"window": entry.member, "version": entry.version})  # fmt: skip

    def recomputable(self, period_type: str, start_ms: int, now_ms: int) -> bool:
        """Whether every input of the window is surely still retained (CONTRACT §6, §6.1):
        for an hour, its raw events (it starts no earlier than 48 h minus the grace before
        now); for a day, its 24 hourly rows (its first hour is not yet past the 7-day
        retention: it starts no earlier than 7 days before now)."""
        if period_type == HOURLY:
            return start_ms >= now_ms - RAW_RETENTION_MS + self._config.grace_ms
        return start_ms >= now_ms - HOURLY_RETENTION_MS

    def kept_because(self, period_type: str, start_ms: int, now_ms: int) -> str:
        """Why a window that is not ``recomputable`` keeps its row, in words."""
        if period_type == HOURLY:
            cutoff = now_ms - RAW_RETENTION_MS + self._config.grace_ms
            what = "its raw events may be partly deleted (48 h retention, minus the grace)"
        else:
            cutoff = now_ms - HOURLY_RETENTION_MS
            what = "its hourly rows may be partly deleted (7-day retention)"
        return f"{what}: it starts before {windows.utc(cutoff).isoformat()}"

    async def _keeps(self, period_type: str, start_ms: int, now_ms: int) -> str | None:
        """Why a window whose inputs may be partly gone is left as it is (None: compute it).
        It keeps the row it has. One without a row gets its first only while its inputs are
        all surely retained: an hour that started no more than 48 h ago (its first close in
        the grace before its oldest raw events expire); never a day (its hourly rows may be
        gone). Otherwise it gets none: it would count only the part still retained (a late
        event in an hour before a new closer's first one, or a closer down for two days)."""
        if self.recomputable(period_type, start_ms, now_ms):
            return None
        why = self.kept_because(period_type, start_ms, now_ms)
        if await asyncio.to_thread(snapshots.exists, self._store, period_type, start_ms):
            return f"kept its snapshot: {why}"
        if period_type == HOURLY and start_ms >= now_ms - RAW_RETENTION_MS:
            return None
        return f"no snapshot made: {why}"

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

    async def emit(
        self, period_type: str, start_ms: int, now: int, generation: int = -1
    ) -> SnapshotSet | None:
        """Compute, keep, write and publish one window's rows with a new version (see the
        module docstring); None if the lease was lost first. ``generation``: the window's
        queue generation, to unqueue it once published (-1: leave the queue alone).
        Raises NotPublished when its records were not all acknowledged: they stay kept."""
        version = await self._state.next_version(now)
        compute = snapshots.compute_hour if period_type == HOURLY else snapshots.compute_day
        snapshot_set = await asyncio.to_thread(
            compute, self._store, start_ms, self._config.stages, version, now
        )
        member = window_member(period_type, start_ms)
        records = tuple(snapshot_messages(snapshot_set))
        entry = Unpublished(member, generation, version, records)
        if not await self._state.hold_unpublished(self._fence, entry):
            return None
        await asyncio.to_thread(snapshots.write, self._store, snapshot_set)
        await self._send(entry, now)
        telemetry.SNAPSHOTS_EMITTED.labels(period_type).inc(len(snapshot_set.snapshots))
        log.info(
            "snapshot emitted",
            extra={"period_type": period_type, "period_start": windows.utc(start_ms).isoformat(),
                   "rows": len(snapshot_set.snapshots), "version": version},
        )  # fmt: skip
        return snapshot_set

    async def _send(self, entry: Unpublished, now: int) -> None:
        """Publish ``entry``'s records; once all are acknowledged, tell the state (which also
        queues the day of an hour again, if that day is closed)."""
        limit = self._config.max_record_bytes
        sizes = [len(key) + len(value) + RECORD_OVERHEAD_BYTES for key, value in entry.records]
        if max(sizes, default=0) > limit:
            telemetry.SNAPSHOTS_UNPUBLISHED.labels("too_large").inc()
            log.error("snapshot records of %s too large for the topic (%d > %d bytes): kept, "
                      "retried every tick", entry.member, max(sizes), limit)  # fmt: skip
            raise NotPublished(entry.member)
        try:
            await self._publish(list(entry.records))
        except Exception as error:  # any refusal or outage: keep the records, go on
            telemetry.SNAPSHOTS_UNPUBLISHED.labels("refused").inc()
            log.error("snapshot records of %s not acknowledged (%s): kept, retried every tick",
                      entry.member, error)  # fmt: skip
            raise NotPublished(entry.member) from error
        day: tuple[str, int] = ("", 0)
        period_type, _, start = entry.member.partition(":")
        if period_type == HOURLY:
            day_ms = windows.day_start(int(start))
            day = (window_member(DAILY, day_ms), day_ms)
        await self._state.published(entry, day, now - self._config.debounce_ms)

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
    max_record_bytes: int | None = None,
) -> WindowCloser:
    """A closer wired to the settings: snapshots published with ``publisher``. Raises
    CloserError when the largest possible record would not fit the snapshot topic, whose
    max.message.bytes is read from the broker unless ``max_record_bytes`` gives it."""
    if max_record_bytes is None:
        try:
            max_record_bytes = topics.max_message_bytes(
                settings.kafka_bootstrap, settings.snapshots_topic, confluent_security(settings)
            )
        except topics.TopicsError as error:  # e.g. not created yet: the broker's default
            log.warning("%s; assuming Kafka's default %d", error, KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
            max_record_bytes = KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    check_record_limit(settings.stages, max_record_bytes, settings.snapshots_topic)

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
        max_record_bytes=max_record_bytes,
    )
    return WindowCloser(state, store, publish, config, clock)
