"""One consumed batch made durable, exactly once (CONTRACT §3.1).

Order of effects, each idempotent under replay of the same Kafka messages:

1. decode every message (pure);
2. rejections not yet dead-lettered go to the DLQ and are acknowledged by Kafka;
3. one atomic Redis script marks the new event ids seen (with the position that counted
   them), marks the rejections dead-lettered and adds the summed counter increments;
4. raw rows go to ClickHouse in one columnar insert: the new events, plus events whose
   seen-marker holds their own position (counted before a crash) but that have no row yet;
5. only then does the caller ack the messages, so Kafka offsets follow durable writes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aggregators.windows import hour_start
from consumers.dead_letters import DeadLetter, DeadLetters
from consumers.decode import AcceptedEvent, decode_message
from consumers.raw_writer import Position, RawRow, RawWriter
from consumers.rolling_counters import DEDUP_SLACK_MS, Claim, NewEvent, RollingCounters
from voicemon import keys, rolling, telemetry
from voicemon.event import RAW_RETENTION_MS, EventType, PipelineEvent
from voicemon.window_state import WindowState

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
        dead_letters: DeadLetters | None,
        raw_writer: RawWriter | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._window_state = window_state
        self._stages = frozenset(stages)
        self._dead_letters = dead_letters
        self._raw_writer = raw_writer
        self._clock = clock
        self._claimant = f"worker-{uuid.uuid4().hex}"

    async def process(self, messages: Sequence[Message]) -> BatchOutcome:
        now_ms = int(self._clock() * 1000)
        rows, letters = self._decode(messages, now_ms)
        if self._dead_letters is not None:
            await self._dead_letter(self._dead_letters, letters, now_ms)
            classified = await self._count_once(rows, now_ms)
            _observe(row.event for row in classified.new)
            telemetry.EVENTS_DUPLICATE.inc(classified.duplicates)
        else:
            classified = await self._follow_counters(rows)
        missing: list[RawRow] = []
        if self._raw_writer is not None:
            missing = await asyncio.to_thread(_missing_rows, self._raw_writer, classified.replayed)
            written = classified.new + missing
            await asyncio.to_thread(self._raw_writer.write, written)
            late = await self._window_state.record_written(*written_windows(written), now_ms)
            telemetry.EVENTS_LATE.inc(late)
        return BatchOutcome(len(classified.new), len(missing), classified.duplicates, len(letters))

    async def _dead_letter(
        self, dead_letters: DeadLetters, letters: list[DeadLetter], now_ms: int
    ) -> None:
        """Publish each rejection exactly once across workers and crashes (see Claim)."""
        pending = {_dlq_key(letter): letter for letter in letters}
        while pending:
            claims = await asyncio.to_thread(self._claims, dead_letters, pending, now_ms)
            verdicts = await self._counters.claim_dead_letters(claims, now_ms)
            to_send = {k: pending[k] for k, v in verdicts.items() if v == "claimed"}
            held = {k: pending[k] for k, v in verdicts.items() if v == "held"}
            earlier = {k: v for k, v in verdicts.items() if isinstance(v, Claim)}
            published = await asyncio.to_thread(
                _published, dead_letters, [(pending[k], claim) for k, claim in earlier.items()]
            )
            done = [k for k in earlier if pending[k].source in published]
            for key in set(earlier) - set(done):
                if await self._counters.take_over(key, earlier[key], claims[key]):
                    to_send[key] = pending[key]
                else:
                    held[key] = pending[key]
            await dead_letters.send(list(to_send.values()))
            await self._counters.mark_dead_lettered([*to_send, *done], now_ms + RAW_RETENTION_MS)
            pending = held
            if pending:
                await asyncio.sleep(FOLLOW_POLL_S)

    def _claims(
        self, dead_letters: DeadLetters, letters: dict[str, DeadLetter], now_ms: int
    ) -> dict[str, Claim]:
        ends: dict[int, int] = {}
        claims = {}
        for key, letter in letters.items():
            partition = dead_letters.partition_of(letter)
            if partition not in ends:
                ends[partition] = dead_letters.end_offset(partition)
            claims[key] = Claim(self._claimant, now_ms, partition, ends[partition])
        return claims

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


def _published(
    dead_letters: DeadLetters, claimed: list[tuple[DeadLetter, Claim]]
) -> set[tuple[int, int, int | None]]:
    """Sources found in the DLQ partitions after the offsets the earlier claims recorded."""
    since: dict[int, int] = {}
    for _, claim in claimed:
        since[claim.dlq_partition] = min(since.get(claim.dlq_partition, claim.dlq_offset),
                                         claim.dlq_offset)  # fmt: skip
    found: set[tuple[int, int, int | None]] = set()
    for partition, offset in since.items():
        found |= dead_letters.published_since(partition, offset)
    return found


def _dlq_key(letter: DeadLetter) -> str:
    return keys.dead_lettered(letter.partition, letter.offset, letter.rejected.batch_index)


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
