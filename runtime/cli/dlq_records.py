"""Dead letters as the DLQ tools see them, pure: a record's headers read, records selected
(reason, time, offsets), counted by reason, and printed.

A DLQ record (CONTRACT §2, §3.0, §3.3; written by ``consumers.dead_letters``) holds the
rejected bytes untouched — a whole message, or one batch element as compact JSON — under the
input record's key, with the headers ``voicemon-reason``, ``voicemon-detail``,
``voicemon-source-partition``, ``voicemon-source-offset`` and, for a batch element,
``voicemon-batch-index``. Fix-ups and verdicts are in ``runtime.cli.dlq_fixups``; Kafka I/O
is in ``runtime.cli.dlq_kafka``.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from aggregators.query.queries import QueryError, parse_time
from runtime.cli.common import duration_s
from voicemon.event import RejectReason

UNKNOWN_REASON = "(none)"  # a record without a voicemon-reason header: not written by voicemon
_OFFSETS = re.compile(r"^(\d+):(\d+)(?:-(\d+))?\Z", re.ASCII)
_INTEGER = re.compile(r"-?[0-9]+")


class DlqToolError(ValueError):
    """A bad argument of a DLQ tool; the message is one sentence saying what to give."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One DLQ record with its headers read."""

    partition: int  # of the DLQ topic
    offset: int
    timestamp_ms: int | None  # when the worker published it (the rejection's time)
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_partition: int | None
    source_offset: int | None
    batch_index: int | None
    truncated: bool = False  # an envelope: the original's first 64 KiB only (docs/events.md)

    @property
    def event_id(self) -> str | None:
        """The payload's ``event_id`` when it is a JSON object that has a string one."""
        if not self.value:
            return None
        try:
            decoded = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None
        event_id = decoded.get("event_id") if isinstance(decoded, dict) else None
        return event_id if isinstance(event_id, str) else None

    @property
    def source(self) -> str:
        """``partition:offset`` of the input record, ``[index]`` for a batch element."""
        where = f"{_dash(self.source_partition)}:{_dash(self.source_offset)}"
        return where if self.batch_index is None else f"{where}[{self.batch_index}]"

    def to_json(self) -> dict[str, Any]:
        value_text = utf8_or_none(self.value)
        shown: dict[str, Any] = {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "time": None if self.timestamp_ms is None else rfc3339(self.timestamp_ms),
            "reason": self.reason,
            "detail": self.detail,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "batch_index": self.batch_index,
            "event_id": self.event_id,
            "key": utf8_or_none(self.key),
            "value": value_text,
        }
        if self.value is not None and value_text is None:
            shown["value_hex"] = self.value.hex()  # not UTF-8: the bytes, losslessly
        return shown


def dead_letter(
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
) -> DeadLetterRecord:
    """A DLQ record from what Kafka returned; missing or garbled headers read as unknown."""
    found = {name: bytes(raw).decode("utf-8", "replace") for name, raw in headers or [] if raw}
    return DeadLetterRecord(
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        key=key,
        value=value,
        reason=found.get("voicemon-reason", UNKNOWN_REASON),
        detail=found.get("voicemon-detail", ""),
        source_partition=_int(found.get("voicemon-source-partition")),
        source_offset=_int(found.get("voicemon-source-offset")),
        batch_index=_int(found.get("voicemon-batch-index")),
        truncated="voicemon-truncated" in found,
    )


# -- selecting ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """DLQ offsets ``first`` to ``last`` (inclusive) of one DLQ partition."""

    partition: int
    first: int
    last: int

    def __contains__(self, record: object) -> bool:
        return (
            isinstance(record, DeadLetterRecord)
            and record.partition == self.partition
            and self.first <= record.offset <= self.last
        )


@dataclass(frozen=True, slots=True)
class Selection:
    """Which records a tool acts on: every condition given must hold (none given: all)."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    offsets: tuple[OffsetRange, ...] = ()

    @property
    def empty(self) -> bool:
        return (
            not (self.reasons or self.offsets) and self.since_ms is None and (self.until_ms is None)
        )

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.reasons and record.reason not in self.reasons:
            return False
        if self.offsets and not any(record in offsets for offsets in self.offsets):
            return False
        at = record.timestamp_ms
        if self.since_ms is not None and (at is None or at < self.since_ms):
            return False
        return self.until_ms is None or (at is not None and at <= self.until_ms)


def parse_time_arg(text: str, name: str, now_ms: int) -> int:
    """``15m``, ``2h``, ``7d``, ``90s`` (that long before now), RFC 3339 or epoch ms."""
    back_s = duration_s(text)
    if back_s is not None:
        return now_ms - back_s * 1000
    try:
        return parse_time(text, name)
    except QueryError:
        raise DlqToolError(
            f"--{name}: expected a duration back from now (15m, 2h, 7d), an RFC 3339 time "
            f"with offset or epoch milliseconds; got {text!r}"
        ) from None


def parse_offsets(text: str) -> OffsetRange:
    """``P:O`` (one DLQ record) or ``P:FIRST-LAST`` (inclusive), as ``dlq tail`` shows them."""
    match = _OFFSETS.match(text.strip())
    if match is None:
        raise DlqToolError(
            f"--offset: expected PARTITION:OFFSET or PARTITION:FIRST-LAST; got {text!r}"
        )
    partition, first = int(match.group(1)), int(match.group(2))
    last = int(match.group(3)) if match.group(3) is not None else first
    if last < first:
        raise DlqToolError(f"--offset {text}: the last offset is before the first")
    return OffsetRange(partition, first, last)


def selection(
    reasons: Sequence[str],
    since: str | None,
    until: str | None,
    offsets: Sequence[str],
    now_ms: int,
) -> Selection:
    """The selection the command-line options describe."""
    unknown = sorted(set(reasons) - {reason.value for reason in RejectReason})
    if unknown:
        codes = ", ".join(reason.value for reason in RejectReason)
        raise DlqToolError(f"--reason {unknown[0]!r} is not a reason code; use one of {codes}")
    since_ms = None if since is None else parse_time_arg(since, "since", now_ms)
    until_ms = None if until is None else parse_time_arg(until, "until", now_ms)
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise DlqToolError("--since must not be after --until")
    return Selection(
        frozenset(reasons), since_ms, until_ms, tuple(parse_offsets(o) for o in offsets)
    )


def read_span(
    marks: Mapping[int, tuple[int, int]],
    selection: Selection,
    since_offsets: Mapping[int, int] | None = None,
    last: int | None = None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Where to start and stop reading each partition (``marks``: its low and high offsets):
    from ``since_offsets`` if given, else from the low offset, or at most the ``last``
    records; narrowed to the selected offset ranges."""
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for partition, (low, high) in marks.items():
        start = low if since_offsets is None else max(low, since_offsets[partition])
        end = high
        if last is not None:
            start = max(start, high - last)
        if selection.offsets:
            ranges = [r for r in selection.offsets if r.partition == partition]
            if ranges:
                start = max(start, min(r.first for r in ranges))
                end = min(end, max(r.last for r in ranges) + 1)
            else:
                start = end
        starts[partition], ends[partition] = start, max(start, end)
    return starts, ends


def latest(records: Iterable[DeadLetterRecord], count: int) -> list[DeadLetterRecord]:
    """The ``count`` newest records (by time, then position), oldest first."""
    newest = heapq.nlargest(count, records, key=_position)
    return sorted(newest, key=_position)


def _position(record: DeadLetterRecord) -> tuple[int, int, int]:
    at = -1 if record.timestamp_ms is None else record.timestamp_ms
    return at, record.partition, record.offset


# -- summarising --------------------------------------------------------------------------


@dataclass(slots=True)
class ReasonCount:
    reason: str
    messages: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    latest_detail: str = ""

    def add(self, record: DeadLetterRecord) -> None:
        self.messages += 1
        at = record.timestamp_ms
        if at is None:
            return
        self.first_ms = at if self.first_ms is None else min(self.first_ms, at)
        if self.last_ms is None or at >= self.last_ms:
            self.last_ms, self.latest_detail = at, record.detail

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "messages": self.messages,
            "first_seen": None if self.first_ms is None else rfc3339(self.first_ms),
            "last_seen": None if self.last_ms is None else rfc3339(self.last_ms),
            "latest_detail": self.latest_detail,
        }


def count_by_reason(records: Iterable[DeadLetterRecord]) -> list[ReasonCount]:
    """Records per reason, most frequent first (then by reason)."""
    counts: dict[str, ReasonCount] = {}
    for record in records:
        counts.setdefault(record.reason, ReasonCount(record.reason)).add(record)
    return sorted(counts.values(), key=lambda count: (-count.messages, count.reason))


def tail_line(record: DeadLetterRecord) -> str:
    """One record as ``dlq tail`` prints it."""
    at = "-" if record.timestamp_ms is None else rfc3339(record.timestamp_ms)
    event = f" event_id={record.event_id}" if record.event_id is not None else ""
    return (
        f"{at} {record.reason} dlq={record.partition}:{record.offset} "
        f"source={record.source}{event} — {record.detail}"
    )


def rfc3339(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and _INTEGER.fullmatch(text) else None


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def utf8_or_none(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
