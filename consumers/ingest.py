"""One consumed batch made durable, exactly once (CONTRACT §3.1).

Order of effects, each idempotent under replay of the same Kafka messages:

1. decode every message (pure, ``consumers.decode``);
2. each rejection is published to the DLQ exactly once (``consumers.publish_once``);
3. one atomic Redis script marks the new event ids seen (with the position that counted
   them) and adds the summed counter increments (``consumers.rolling_counters``);
4. raw rows go to ClickHouse in one columnar insert: the new events, plus events whose
   seen-marker holds their own position (counted before a crash) but that have no row yet;
5. only then does the caller ack the messages, so Kafka offsets follow durable writes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from consumers.dead_letters import DeadLetter
from consumers.decode import AcceptedEvent, decode_message
from consumers.publish_once import OncePublisher
from consumers.raw_writer import Position, RawRow, RawWriter
from consumers.rolling_counters import DEDUP_SLACK_MS, NewEvent, RollingCounters
from voicemon import keys, rolling, telemetry
from voicemon.event import RAW_RETENTION_MS, EventType, PipelineEvent
from voicemon.window_state import WindowState
from voicemon.windows import hour_start

FOLLOW_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Message:
    """The parts of a consumed Kafka message that ingest needs."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    counted: int
    recovered: int
    duplicates: int
    rejected: int


@dataclass(slots=True)
class _Classified:
    new: list[RawRow]
    replayed: list[RawRow]
    duplicates: int


class Ingest:
    """One batch made durable. ``dead_letters`` set: this worker counts (DLQ, dedup, rolling
    counters); ``raw_writer`` set: it writes raw rows. A worker of role ``all`` does both;
    role ``counters`` only counts; role ``store`` only writes, following the counters."""

    def __init__(
        self,
        counters: RollingCounters,
        window_state: WindowState,
        stages: Sequence[str],
        *,
        dead_letters: OncePublisher | None,
        raw_writer: RawWriter | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._window_state = window_state
        self._stages = frozenset(stages)
        self._dead_letters = dead_letters
        self._raw_writer = raw_writer
        self._clock = clock

    async def process(self, messages: Sequence[Message]) -> BatchOutcome:
        now_ms = int(self._clock() * 1000)
        rows, letters = self._decode(messages, now_ms)
        if self._dead_letters is not None:
            await self._dead_letters.publish_once(letters, now_ms)
            classified = await self._count_once(rows, now_ms)
        else:
            classified = await self._follow_counters(rows)
        recovered: list[RawRow] = []
        if self._raw_writer is not None:
            recovered = await self._store(self._raw_writer, classified, now_ms)
        return BatchOutcome(
            len(classified.new), len(recovered), classified.duplicates, len(letters)
        )

    async def _store(
        self, raw_writer: RawWriter, classified: _Classified, now_ms: int
    ) -> list[RawRow]:
        """Write the new rows and the replayed ones the store lacks; raise the watermarks.
        Returns the replayed rows that were missing."""
        missing = await asyncio.to_thread(_missing_rows, raw_writer, classified.replayed)
        written = classified.new + missing
        await asyncio.to_thread(raw_writer.write, written)
        late = await self._window_state.record_written(*written_windows(written), now_ms)
        telemetry.EVENTS_LATE.inc(late)
        return missing

    async def _follow_counters(self, rows: list[RawRow]) -> _Classified:
        """For a store-only worker: wait until the counting workers have decided every event
        of the batch, then keep the events counted at their own position."""
        seen_keys = [keys.seen_event(row.event.event_id) for row in rows]
        while True:
            owners = await self._counters.first_positions(seen_keys)
            if all(owner is not None for owner in owners):
                return classify(rows, owners)
            await asyncio.sleep(FOLLOW_POLL_S)

    def _decode(
        self, messages: Sequence[Message], now_ms: int
    ) -> tuple[list[RawRow], list[DeadLetter]]:
        rows: list[RawRow] = []
        letters: list[DeadLetter] = []
        for message in messages:
            for item in decode_message(message.value, now_ms=now_ms, stages=self._stages):
                if isinstance(item, AcceptedEvent):
                    position = Position(message.partition, message.offset, item.batch_index)
                    rows.append(RawRow(item.event, position))
                else:
                    letters.append(DeadLetter(item, message.key, message.partition, message.offset))
        return rows, letters

    async def _count_once(self, rows: list[RawRow], now_ms: int) -> _Classified:
        while True:
            owners = await self._counters.first_positions(
                [keys.seen_event(row.event.event_id) for row in rows]
            )
            classified = classify(rows, owners)
            new_events = [
                NewEvent(
                    keys.seen_event(row.event.event_id),
                    str(row.position),
                    row.event.occurred_at_ms + RAW_RETENTION_MS + DEDUP_SLACK_MS,
                )
                for row in classified.new
            ]
            buckets = rolling.increments((row.event for row in classified.new), now_ms)
            if not await self._counters.count_once(new_events, buckets):
                _observe(row.event for row in classified.new)
                telemetry.EVENTS_DUPLICATE.inc(classified.duplicates)
                return classified
            # Another worker counted some of these ids in the meantime: look again.


def _missing_rows(raw_writer: RawWriter, replayed: list[RawRow]) -> list[RawRow]:
    """The counted rows of a replayed batch that the store does not hold yet."""
    if not replayed:
        return []
    written = raw_writer.already_written([row.position for row in replayed])
    return [row for row in replayed if row.position not in written]


def classify(rows: Sequence[RawRow], owners: Sequence[str | None]) -> _Classified:
    """Split a batch by the position that first counted each event id (pure).

    No owner: new (the first occurrence in the batch only). Owner is this very position:
    counted before a crash, a replay. Any other owner: a duplicate."""
    classified = _Classified([], [], 0)
    claimed: set[str] = set()
    for row, owner in zip(rows, owners, strict=True):
        if owner is None and row.event.event_id not in claimed:
            claimed.add(row.event.event_id)
            classified.new.append(row)
        elif owner == str(row.position):
            classified.replayed.append(row)
        else:
            classified.duplicates += 1
    return classified


def written_windows(rows: Sequence[RawRow]) -> tuple[dict[int, int], dict[int, int]]:
    """Newest event time per input partition, and event count per hour, of written rows."""
    newest: dict[int, int] = {}
    per_hour: dict[int, int] = {}
    for row in rows:
        partition, at = row.position.partition, row.event.occurred_at_ms
        newest[partition] = max(newest.get(partition, at), at)
        hour = hour_start(at)
        per_hour[hour] = per_hour.get(hour, 0) + 1
    return newest, per_hour


def _observe(events: Iterable[PipelineEvent]) -> None:
    """Prometheus updates for newly counted events: counters once per batch."""
    counts: Counter[tuple[str, str]] = Counter()
    cost = 0.0
    for event in events:
        counts[event.event_type.value, event.stage or ""] += 1
        cost += event.ai_cost_usd or 0.0
        if event.duration_ms is None:
            continue
        if event.event_type is EventType.ARTIFACT_COMPLETED:
            telemetry.END_TO_END_LATENCY.observe(event.duration_ms / 1000)
        elif event.event_type is EventType.STAGE_COMPLETED and event.stage is not None:
            telemetry.STAGE_DURATION.labels(event.stage).observe(event.duration_ms / 1000)
    for (event_type, stage), count in counts.items():
        telemetry.EVENTS.labels(event_type, stage).inc(count)
    if cost:
        telemetry.AI_COST.inc(cost)
