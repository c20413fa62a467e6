"""Hand-written schedules: the minimal ones the shrinker found, and tamed generated ones.

Times are given relative to a fixed instant two days after the real clock's UTC day, at
10:00 UTC, so that a case reads the same whenever it runs."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson

from tests.reference import DAY_MS, HOUR_MS, MINUTE_MS
from tests.simulation.schedule import Chunk, CloserFault, Element, Record, Schedule

T0 = (int(time.time() * 1000) // DAY_MS + 2) * DAY_MS + 10 * HOUR_MS


def event(
    event_id: str, occurred_ms: int | str, kind: str = "artifact_received", **fields: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": kind,
        "occurred_at": occurred_ms,
        "artifact_id": f"art-{event_id}",
        **fields,
    }


def record(
    partition: int,
    offset: int,
    *bodies: dict[str, Any],
    at: int | None,
    log_append: bool = True,
    batch: bool = False,
    malformed: str | None = None,
    raw: bytes | None = None,
) -> Record:
    elements = tuple(
        Element(b, raw if raw is not None else orjson.dumps(b), malformed) for b in bodies
    )
    value = b"[" + b",".join(e.raw for e in elements) + b"]" if batch else elements[0].raw
    return Record(partition, offset, value, at, log_append, elements, batch)


def chunk(at: int, *records: Record, fault: str = "none", replay_at: int = 0) -> Chunk:
    return Chunk(at, tuple(records), fault, replay_at)


def plan(
    *chunks: Chunk,
    topology: str = "all",
    closer: bool = False,
    ticks: tuple[int, ...] | None = None,
    **extra: Any,
) -> Schedule:
    """A schedule of ``chunks``; ticks every 10 minutes to 2 h after the last step unless
    given (the closer runs at ticks; without it they only sample and housekeep)."""
    last = max(c.replay_at_ms or c.at_ms for c in chunks)
    if ticks is None:
        first = chunks[0].at_ms - chunks[0].at_ms % (10 * MINUTE_MS) + 10 * MINUTE_MS
        ticks = tuple(range(first, last + 2 * HOUR_MS, 10 * MINUTE_MS))
    return Schedule(0, T0, max(ticks), topology, tuple(chunks), ticks=ticks, closer=closer, **extra)


def tame(schedule: Schedule) -> Schedule:
    """The same arrivals without any edge the contract lets the system decide: no fault, no
    resend, every record log-append-stamped as it is read, no event near a time limit, no
    closer fault. What is left must match the oracle exactly on every build."""
    seen: set[str] = set()
    chunks = []
    for c in schedule.chunks:
        records = []
        for r in c.records:
            if r.whole is not None:
                records.append(replace(r, record_ms=c.at_ms, log_append=True))
                continue
            kept = []
            for e in r.elements:
                eid = (e.body or {}).get("event_id")
                if eid in seen or e.malformed == "invalid_field":  # item 7's cases are left out
                    continue
                if e.body is not None and e.malformed is None:
                    occurred = e.body["occurred_at"]
                    if (
                        not isinstance(occurred, int)
                        or not c.at_ms - 46 * HOUR_MS < occurred <= c.at_ms
                    ):
                        continue
                seen.add(eid)
                kept.append(e)
            if kept:
                value = b"[" + b",".join(e.raw for e in kept) + b"]" if r.batch else kept[0].raw
                records.append(
                    replace(
                        r, elements=tuple(kept), value=value, record_ms=c.at_ms, log_append=True
                    )
                )
        if records:
            chunks.append(replace(c, records=tuple(records), fault="none", replay_at_ms=0))
    return replace(schedule, chunks=tuple(chunks), closer_faults=())


__all__ = ["T0", "CloserFault", "chunk", "event", "plan", "record", "tame"]
