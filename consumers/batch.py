"""A consumed batch, pure: its messages, how its events are sorted by who counted them, and
what its rows change in the window state. No I/O; ``consumers.ingest`` does the effects."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from consumers.decode import RejectedPayload, batch_elements
from consumers.letters import DeadLetter
from consumers.rows import Position, RawRow
from voicemon import keys
from voicemon.event import FUTURE_TOLERANCE_MS, Rejection, RejectReason
from voicemon.windows import HOUR_MS


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
    duplicates: list[Position]  # copies of events another position counted


UNSTORABLE = Rejection(
    RejectReason.UNSTORABLE, "the store refused the event as it is; see the worker's log"
)
# Too late by a "now" that a later reading may not share (the worker's clock, a create time).
TOO_LATE_NOW = Rejection(
    RejectReason.TOO_LATE,
    "occurred_at: older than the 48 hour retention by the worker's clock or the record's time",
)

# A copy of an event reaches a worker at most this long before its ``occurred_at`` by the
# worker's clock: 5 minutes ahead of its record's "now", which lies at most 5 minutes ahead
# of the worker's clock (``voicemon.event.decision_time_ms``).
EARLIEST_ARRIVAL_MS = 2 * FUTURE_TOLERANCE_MS


def letter_of(row: RawRow, message: Message, rejection: Rejection) -> DeadLetter:
    """The DLQ record of a row rejected after decoding: its message's bytes, or its batch
    element's own bytes as they stood in the batch (CONTRACT §2)."""
    payload = message.value or b""
    batch_index: int | None = None
    if payload.lstrip().startswith(b"["):
        batch_index = row.position.batch_index
        payload = _elements(payload)[batch_index]
    return letter_from(RejectedPayload(rejection, payload, batch_index), message)


def letter_from(rejected: RejectedPayload, message: Message) -> DeadLetter:
    """The DLQ record of a rejection in ``message``: its key, its position and its
    log-append time (None if its timestamp is not the broker's)."""
    appended = message.timestamp_ms if message.log_append else None
    return DeadLetter(rejected, message.key, message.partition, message.offset, appended)


@functools.lru_cache(maxsize=16)
def _elements(payload: bytes) -> list[bytes]:
    """A batch's elements, split once for all the letters of its elements."""
    return batch_elements(payload)


def beyond_markers(row: RawRow, now_ms: int) -> bool:
    """Whether an earlier copy of the event may have been counted so long ago that its
    seen-marker is gone: a marker lives at least ``keys.SEEN_FOR_MS`` after its copy was
    counted, and no copy is counted earlier than ``EARLIEST_ARRIVAL_MS`` before
    ``occurred_at``. Those events are looked up in the store as well."""
    return row.event.occurred_at_ms - EARLIEST_ARRIVAL_MS + keys.SEEN_FOR_MS < now_ms


def classify(rows: Sequence[RawRow], owners: Sequence[str | None]) -> Classified:
    """Split a batch by the position that first counted each event id (pure).

    No owner: new (the first occurrence in the batch only). Owner is this very position:
    counted before a crash, a replay. This position settled (refused by the store): a replay
    of a decision made, nothing. Any other owner: a duplicate."""
    classified = Classified([], [], [])
    claimed: set[str] = set()
    for row, owner in zip(rows, owners, strict=True):
        if owner is None and row.event.event_id not in claimed:
            claimed.add(row.event.event_id)
            classified.new.append(row)
        elif owner == str(row.position):
            classified.replayed.append(row)
        elif owner == keys.SETTLED + str(row.position):
            continue  # refused as unstorable when it was counted: settled, nothing to do
        else:
            classified.duplicates.append(row.position)
    return classified


def written_windows(rows: Sequence[RawRow]) -> tuple[dict[int, int], dict[int, int]]:
    """Newest event time per input partition, and event count per hour, of written rows."""
    newest: dict[int, int] = {}
    per_hour: dict[int, int] = {}
    for row in rows:
        partition, at = row.position.partition, row.event.occurred_at_ms
        if at > newest.get(partition, at - 1):
            newest[partition] = at
        hour = at - at % HOUR_MS  # hour_start, inline: once per row
        per_hour[hour] = per_hour.get(hour, 0) + 1
    return newest, per_hour
