"""Arrival schedules from a seed (pure): what arrives when, how it is packed into Kafka
records and chunks, and which faults hit which step.

Times are virtual epoch milliseconds. A schedule starts two days after the UTC day of the
real clock (so that Redis expiries set from the virtual clock lie in Redis's future) at a
seeded time of day; everything else follows from the seed alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from tests.reference import DAY_MS, HOUR_MS, MINUTE_MS, RETENTION_MS, decision_now

STAGES = ("transcription", "claims_extraction", "entity_resolution", "draft_generation")
PARTITIONS = 3
EVENT_TYPES = (
    "artifact_received",
    "artifact_completed",
    "artifact_failed",
    "stage_started",
    "stage_completed",
    "stage_failed",
)
ORGS = ("org-a", "org-b", "org.c:1", None)
GENERATION_MS = 20 * MINUTE_MS  # the seen-markers' generation (voicemon.keys), a seam to aim at
MARKER_GENERATIONS = 5
MARKER_REACH_MS = 80 * MINUTE_MS + 5 * MINUTE_MS  # beyond_markers: 80 min + the 5 min tolerance
TICK_MS = 10 * MINUTE_MS
OVERLAP_MS = 1000  # a chunk's store overlaps the next chunk's count if it comes this soon
SECOND = 1000


@dataclass(frozen=True, slots=True)
class Element:
    """One event object of a message, as it stands in the message's bytes."""

    body: dict[str, Any] | None  # None: not an event object
    raw: bytes
    malformed: str | None = None  # the reason code it was built to have; None: well-formed


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    value: bytes | None
    record_ms: int | None
    log_append: bool
    elements: tuple[Element, ...]
    batch: bool
    whole: str | None = None  # the reason the whole message is rejected, if it is


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records read together at ``at_ms`` and what happens to their steps.

    fault: none | overlap (stored only after the next chunk is counted) | crash_after_count |
    crash_in_store | handover (the new owner replays at ``replay_at_ms``; the old owner's
    store finishes after it) | outage (crash_after_count, replayed hours later) | ahead (split
    roles: the counting workers read the chunk only at ``replay_at_ms``, so role store waits
    out its deadline and decides alone) | ahead_overlap (ahead, and stored as overlap is)."""

    at_ms: int
    records: tuple[Record, ...]
    fault: str = "none"
    replay_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class CloserFault:
    """At the tick at ``at_ms``, the closer's ``call``-th publish fails: kind ``crash`` (before
    the records are sent; the closer dies, a successor starts at ``successor_at_ms``),
    ``crash_after`` (sent, then dies) or ``refuse`` (the topic refuses; it retries)."""

    at_ms: int
    kind: str
    call: int = 1
    successor_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    start_ms: int
    end_ms: int
    topology: str  # "all" or "split" (counters + store)
    chunks: tuple[Chunk, ...]
    closer_faults: tuple[CloserFault, ...] = ()
    dlq_max_bytes: int | None = None  # None: every letter fits (CONTRACT §2)
    ticks: tuple[int, ...] = field(default=())
    closer: bool = True  # False: no window closer (a shrunk schedule of ingest views)
    closer_from_ms: int | None = None  # the hour a closer with history has reached (None: new)

    def arrivals(self) -> int:
        return sum(len(r.elements) or 1 for c in self.chunks for r in c.records)


def start_of(real_now_ms: int, rng: random.Random) -> int:
    return real_now_ms - real_now_ms % DAY_MS + 2 * DAY_MS + rng.randrange(DAY_MS)


# -- events and their copies ----------------------------------------------------------------


@dataclass(slots=True)
class _Copy:
    read_ms: int
    body: dict[str, Any] | None
    malformed: str | None = None
    raw: bytes | None = None  # the element's bytes when not orjson.dumps(body)
    solo: bool = False  # its own record and chunk, read at exactly read_ms
    record: tuple[int | None, bool] | None = None  # (record_ms, log_append) when fixed
    whole: bytes | None = None  # a whole malformed message


def _body(rng: random.Random, event_id: str, occurred_ms: int) -> dict[str, Any]:
    kind = rng.choice(EVENT_TYPES)
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_type": kind,
        "occurred_at": occurred_ms,
        "artifact_id": f"art-{event_id}",
    }
    org = rng.choice(ORGS)
    if org is not None:
        body["organization_id"] = org
    if kind.startswith("stage_"):
        body["stage"] = rng.choice(STAGES)
    if kind in ("artifact_completed", "stage_completed", "stage_failed") and rng.random() < 0.9:
        body["duration_ms"] = _duration(rng)
    if rng.random() < 0.5:
        body["ai_cost_usd"] = rng.choice([0, 10_000, 0.1, round(rng.uniform(0, 3), 6)])
    if kind.endswith("_failed") and rng.random() < 0.5:
        body["error_code"] = "E" * rng.randint(1, 128)
    if rng.random() < 0.1:
        body["occurred_at"] = _rfc3339(occurred_ms)
    return body


def _duration(rng: random.Random) -> float | int:
    roll = rng.random()
    if roll < 0.1:  # extreme but valid
        return rng.choice([0, 86_400_000, 5e-324, 1e-300, 0.001, 86_399_999.999])
    return round(rng.lognormvariate(7, 2), 3) if roll < 0.95 else rng.randint(0, 86_400_000)


def _rfc3339(ms: int) -> str:
    from datetime import UTC, datetime, timedelta, timezone

    offset = timezone(timedelta(hours=2))
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(offset)
    return moment.isoformat(timespec="milliseconds")


def _occurred(rng: random.Random, read_ms: int) -> tuple[int, bool]:
    """occurred_at for an event first read at ``read_ms``; True when it sits on an edge of
    the time rules relative to the read time (its copy is sent alone, decided exactly)."""
    roll = rng.random()
    if roll < 0.62:
        return read_ms - rng.randrange(5 * MINUTE_MS), False
    if roll < 0.72:
        return read_ms - rng.randrange(5 * MINUTE_MS, 3 * HOUR_MS), False
    if roll < 0.80:
        return read_ms - rng.randrange(3 * HOUR_MS, RETENTION_MS - HOUR_MS), False
    if roll < 0.84:
        return read_ms + rng.randrange(5 * MINUTE_MS), False
    if roll < 0.92:  # exactly on or 1 ms past the future and late edges, or near them
        edge = rng.choice([5 * MINUTE_MS, -RETENTION_MS, 5 * MINUTE_MS, -RETENTION_MS + HOUR_MS])
        return read_ms + edge + rng.choice([-1, 0, 1, -rng.randrange(MINUTE_MS)]), True
    # on an hour or a day edge, or 1 ms before one
    base = read_ms - rng.randrange(6 * HOUR_MS)
    edge = base - base % (DAY_MS if rng.random() < 0.3 else HOUR_MS)
    return edge - rng.choice([0, 1, 0]), False


def _resend_delays(rng: random.Random, first_ms: int, occurred_ms: int) -> Iterator[int]:
    """Delays of later copies after the first one's read, dense around every seam."""
    generation_end = (first_ms // GENERATION_MS + MARKER_GENERATIONS) * GENERATION_MS
    seams = [
        0,
        rng.randrange(10 * SECOND),
        generation_end - first_ms,  # the first copy's marker is no longer read
        occurred_ms + MARKER_REACH_MS - first_ms,  # beyond the markers' reach
        occurred_ms + RETENTION_MS - first_ms,  # the retention edge
        (first_ms // HOUR_MS + 1) * HOUR_MS - first_ms,
        (first_ms // DAY_MS + 1) * DAY_MS - first_ms,
    ]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        roll = rng.random()
        if roll < 0.55:
            jitter = rng.choice([-1, 0, 1, rng.randint(-3 * MINUTE_MS, 3 * MINUTE_MS)])
            yield max(0, rng.choice(seams) + jitter)
        elif roll < 0.75:
            yield rng.randrange(80 * MINUTE_MS, 100 * MINUTE_MS)
        else:
            yield rng.randrange(RETENTION_MS + HOUR_MS)


def _conflicting(rng: random.Random, body: dict[str, Any], occurred_ms: int) -> dict[str, Any]:
    """Same event_id, another payload, often in another hour or day."""
    shift = rng.choice(
        [
            0,
            HOUR_MS,
            -HOUR_MS,
            DAY_MS,
            -DAY_MS,
            3 * HOUR_MS,
            HOUR_MS - occurred_ms % HOUR_MS,
            -(occurred_ms % HOUR_MS) - 1,
        ]
    )
    other = _body(rng, body["event_id"], occurred_ms + shift)
    other["artifact_id"] = body["artifact_id"] + "-other"
    return other


def _malformed(rng: random.Random, event_id: str, read_ms: int) -> _Copy:
    good = _body(rng, event_id, read_ms - 1000)
    good["occurred_at"] = read_ms - 1000
    kind = rng.choice(
        [
            "invalid_json",
            "invalid_utf8",
            "not_an_object",
            "empty_batch",
            "missing_field",
            "unknown_event_type",
            "unknown_stage",
            "invalid_field",
            "newline_time",
            "big_int",
            "null",
        ]
    )
    whole = {
        "invalid_json": b'{"event_id": "x", ',
        "invalid_utf8": b'{"event_id": "\xff"}',
        "not_an_object": b"42",
        "empty_batch": b"[]",
        "null": b"",
    }
    if kind in whole:
        reason = {"empty_batch": "not_an_object", "null": "invalid_json"}.get(kind, kind)
        return _Copy(read_ms, None, reason, whole=whole[kind])
    if kind == "missing_field":
        del good["artifact_id"]
    elif kind == "unknown_event_type":
        good["event_type"] = "artifact_lost"
    elif kind == "unknown_stage":
        good["event_type"], good["stage"] = "stage_started", "no-such-stage"
    elif kind == "invalid_field":
        good["ai_cost_usd"] = -1
    elif kind == "newline_time":  # CONTRACT §3: RFC 3339, nothing after the offset
        good["occurred_at"] = _rfc3339(read_ms - 1000) + "\n"
    elif kind == "big_int":  # beyond 64 bits: its own bytes must reach the DLQ
        good["schema_version"] = 2**70
    reason = {"newline_time": "invalid_field", "big_int": "invalid_field"}.get(kind, kind)
    raw = None
    if kind == "big_int":
        text = orjson.dumps({k: v for k, v in good.items() if k != "schema_version"})
        raw = text[:-1] + b',"schema_version":' + str(2**70).encode() + b"}"
    return _Copy(read_ms, good, reason, raw=raw)


def _copies(rng: random.Random, start_ms: int, end_ms: int, events: int) -> list[_Copy]:
    copies: list[_Copy] = []
    for n in range(events):
        event_id = f"e{n}-{rng.getrandbits(24):06x}"
        first = rng.randrange(start_ms, end_ms)
        if rng.random() < 0.03:
            copies.append(_malformed(rng, event_id, first))
            continue
        occurred, edge = _occurred(rng, first)
        body = _body(rng, event_id, occurred)
        copy = _Copy(first, body, solo=edge)
        if edge:  # decided exactly at its edge: a log-append record read at once
            copy.record = (first, True)
        copies.append(copy)
        if rng.random() < 0.45:
            for delay in _resend_delays(rng, first, occurred):
                again = body if rng.random() < 0.75 else _conflicting(rng, body, occurred)
                if first + delay < end_ms:
                    copies.append(_Copy(first + delay, again, solo=rng.random() < 0.3))
    copies.sort(key=lambda c: c.read_ms)
    return copies


# -- records and chunks ---------------------------------------------------------------------


def _record_time(rng: random.Random, read_ms: int) -> tuple[int | None, bool]:
    roll = rng.random()
    if roll < 0.55:
        return read_ms, True
    if roll < 0.65:  # a backlog: appended long before it is read
        return read_ms - rng.choice([rng.randrange(3 * HOUR_MS), 2 * HOUR_MS, 10 * MINUTE_MS]), True
    if roll < 0.97:  # create time, the producer's clock skewed up to 15 min either way
        edges = [5 * MINUTE_MS, -5 * MINUTE_MS, 5 * MINUTE_MS + 1, -5 * MINUTE_MS - 1]
        skew = (
            rng.choice(edges)
            if rng.random() < 0.3
            else rng.randint(-15 * MINUTE_MS, 15 * MINUTE_MS)
        )
        return read_ms + skew, False
    return None, False


def _element(copy: _Copy) -> Element:
    raw = copy.raw if copy.raw is not None else orjson.dumps(copy.body)
    return Element(copy.body, raw, copy.malformed)


def _records(rng: random.Random, group: list[_Copy], offsets: list[int]) -> list[Record]:
    records: list[Record] = []
    i = 0
    while i < len(group):
        partition = rng.randrange(PARTITIONS)
        copy = group[i]
        record_ms, log_append = copy.record or _record_time(rng, group[-1].read_ms)
        offset = offsets[partition]
        offsets[partition] += 1
        if copy.whole is not None:
            records.append(
                Record(
                    partition, offset, copy.whole, record_ms, log_append, (), False, copy.malformed
                )
            )
            i += 1
            continue
        size = 1 if copy.solo or rng.random() < 0.5 else rng.randint(1, 6)
        members: list[_Copy] = []
        while i < len(group) and len(members) < size and group[i].whole is None:
            members.append(group[i])
            i += 1
        elements = tuple(_element(c) for c in members)
        batch = len(members) > 1 or rng.random() < 0.2
        value = b"[" + b",".join(e.raw for e in elements) + b"]" if batch else elements[0].raw
        records.append(Record(partition, offset, value, record_ms, log_append, elements, batch))
    return records


def generate(
    seed: int, arrivals: int, real_now_ms: int, hours: int = 52, topology: str | None = None
) -> Schedule:
    """A schedule of about ``arrivals`` copies over ``hours`` virtual hours."""
    rng = random.Random(seed)
    start = start_of(real_now_ms, rng)
    end = start + hours * HOUR_MS
    copies = _copies(rng, start, end, max(1, int(arrivals / 1.5)))
    per_chunk = max(1, arrivals // 1500)  # the long mode packs more into each chunk
    chunks: list[Chunk] = []
    offsets = [0] * PARTITIONS
    i = 0
    while i < len(copies):
        # a copy on an edge is read alone, at its exact instant (in the long mode, a sample)
        if copies[i].solo and (per_chunk == 1 or rng.random() < 1 / per_chunk):
            group = [copies[i]]
        else:
            size = rng.randint(1, 6) * per_chunk
            group = []
            while (
                i + len(group) < len(copies)
                and len(group) < size
                and not (copies[i + len(group)].solo and per_chunk == 1)
            ):
                group.append(copies[i + len(group)])
        i += len(group)
        chunks.append(Chunk(group[-1].read_ms, tuple(_records(rng, group, offsets))))
    chunks = _faults(rng, chunks)
    # The closer ticks until two ticks after the last read: an outage's chunks and replays
    # are read up to 3 h after ``end``, and a late event read then redoes its hour then.
    end = max([end, *(c.at_ms for c in chunks), *(c.replay_at_ms for c in chunks)])
    ticks = tuple(range(start - start % TICK_MS + TICK_MS, end + 2 * TICK_MS, TICK_MS))
    return Schedule(
        seed,
        start,
        end + 2 * TICK_MS,
        topology or ("all", "split")[seed % 2],
        tuple(chunks),
        _closer_faults(rng, ticks),
        None,
        ticks,
    )


def _faults(rng: random.Random, chunks: list[Chunk]) -> list[Chunk]:
    chunks = list(chunks)
    result: list[Chunk] = []
    shift_to = 0  # an outage: chunks read before it ends are read when it ends
    for k, chunk in enumerate(chunks):
        at = max(chunk.at_ms, shift_to)
        following = max(chunks[k + 1].at_ms, shift_to) if k + 1 < len(chunks) else at + HOUR_MS
        gap = max(0, following - at)
        roll = rng.random()
        fault, replay = "none", 0
        if roll < 0.25:
            fault = "overlap"  # the next chunk is read while this one is stored: within 1 s
            if k + 1 < len(chunks) and chunks[k + 1].at_ms - at > OVERLAP_MS:
                chunks[k + 1] = replace(chunks[k + 1], at_ms=at + rng.randrange(OVERLAP_MS))
        elif roll < 0.28:
            fault, replay = "crash_after_count", at + min(gap, rng.choice([0, 1000, 30_000]))
        elif roll < 0.30:
            fault, replay = "crash_in_store", at + min(gap, rng.choice([0, 1000, 30_000]))
        elif roll < 0.33:
            fault, replay = "handover", at + min(gap, rng.randrange(60_000, 120_000))
        elif roll < 0.334:
            fault, replay = "outage", at + rng.randrange(HOUR_MS, 3 * HOUR_MS)
            shift_to = replay
        result.append(Chunk(at, chunk.records, fault, replay))
    if result and result[-1].fault == "overlap":
        result[-1] = replace(result[-1], fault="none")
    return result


def _closer_faults(rng: random.Random, ticks: tuple[int, ...]) -> tuple[CloserFault, ...]:
    faults = []
    for tick in ticks:
        roll = rng.random()
        if roll < 0.01:
            faults.append(CloserFault(tick, "crash", rng.randint(1, 3), tick + TICK_MS))
        elif roll < 0.02:
            faults.append(CloserFault(tick, "crash_after", rng.randint(1, 3), tick + TICK_MS))
        elif roll < 0.03:
            faults.append(CloserFault(tick, "refuse", rng.randint(1, 3)))
    return tuple(faults)


def decided_at(record: Record, chunk_at_ms: int) -> int:
    """The record's decision "now" when first read at ``chunk_at_ms`` (for describing)."""
    return decision_now(record.record_ms, record.log_append, chunk_at_ms)
