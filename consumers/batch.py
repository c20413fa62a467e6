"""A consumed batch, pure: its messages, how its events are sorted by who counted them, and
what its rows change in the window state. No I/O; ``consumers.ingest`` does the effects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import orjson

from consumers.dead_letters import DeadLetter
from consumers.decode import RejectedPayload
from consumers.raw_writer import RawRow
from voicemon import keys
from voicemon.event import FUTURE_TOLERANCE_MS, Rejection, RejectReason
from voicemon.windows import hour_start


class Message(msgspec.Struct, frozen=True, gc=False):
    """The parts of a consumed Kafka record that ingest needs."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # the record's timestamp: the "now" of its time rules
    log_append: bool = False  # the timestamp is the broker's log-append time


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    counted: int
    recovered: int
    duplicates: int
    rejected: int
    unstorable: int = 0


@dataclass(slots=True)
class Classified:
    new: list[RawRow]
    replayed: list[RawRow]
    duplicates: int


def unstorable_letter(row: RawRow, message: Message) -> DeadLetter:
    """The DLQ record of a refused row: its message's bytes, or its batch element alone."""
    payload = message.value or b""
    batch_index: int | None = None
    if payload.lstrip().startswith(b"["):
        batch_index = row.position.batch_index
        payload = orjson.dumps(orjson.loads(payload)[batch_index])
    detail = "the store refused the event as it is; see the worker's log"
    rejected = RejectedPayload(Rejection(RejectReason.UNSTORABLE, detail), payload, batch_index)
    return DeadLetter(rejected, message.key, message.partition, message.offset)


def beyond_markers(row: RawRow, now_ms: int) -> bool:
    """Whether an earlier copy of the event may have arrived so long ago that its seen-marker
    is gone: copies arrive at most 5 minutes before ``occurred_at`` (CONTRACT §3.2), and a
    marker lives ``keys.SEEN_FOR_MS`` after arrival."""
    return row.event.occurred_at_ms + FUTURE_TOLERANCE_MS < now_ms - keys.SEEN_FOR_MS


def classify(rows: Sequence[RawRow], owners: Sequence[str | None]) -> Classified:
    """Split a batch by the position that first counted each event id (pure).

    No owner: new (the first occurrence in the batch only). Owner is this very position:
    counted before a crash, a replay. Any other owner: a duplicate."""
    classified = Classified([], [], 0)
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
