"""Shrinking a failing schedule to a minimal one, and describing schedules for people."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from tests.reference import HOUR_MS, MINUTE_MS
from tests.simulation.driver import Discrepancy, Outcome
from tests.simulation.schedule import TICK_MS, Chunk, Record, Schedule

SNAPSHOT_VIEWS = frozenset({"hourly", "daily", "range", "topic"})
Run = Callable[[Schedule], Outcome]


def _element_ids(schedule: Schedule) -> list[str]:
    found: dict[str, None] = {}
    for chunk in schedule.chunks:
        for record in chunk.records:
            for element in record.elements:
                if element.body is not None and "event_id" in element.body:
                    found[element.body["event_id"]] = None
    return list(found)


def _rebuilt(record: Record, keep: Callable[[int], bool]) -> Record | None:
    elements = tuple(e for i, e in enumerate(record.elements) if keep(i))
    if not elements:
        return None
    value = b"[" + b",".join(e.raw for e in elements) + b"]" if record.batch else elements[0].raw
    return replace(record, elements=elements, value=value)


def restrict(schedule: Schedule, keep_ids: set[str], closer: bool) -> Schedule:
    """Only the copies of ``keep_ids`` (malformed whole messages dropped), and the ticks
    the views need."""
    chunks: list[Chunk] = []
    for chunk in schedule.chunks:
        records = []
        for record in chunk.records:
            if record.whole is not None:
                continue
            kept = _rebuilt(record, lambda i, r=record: _id(r, i) in keep_ids)
            if kept is not None:
                records.append(kept)
        if records:
            chunks.append(replace(chunk, records=tuple(records)))
    if not chunks:
        return replace(schedule, chunks=(), closer=closer)
    ticks = schedule.ticks
    if not closer:
        first = chunks[0].at_ms - TICK_MS
        last = max(c.replay_at_ms or c.at_ms for c in chunks) + HOUR_MS + 2 * TICK_MS
        ticks = tuple(t for t in ticks if first <= t <= last) or ticks[-1:]
    return replace(schedule, chunks=tuple(chunks), ticks=ticks, closer=closer)


def _id(record: Record, index: int) -> str | None:
    body = record.elements[index].body
    return None if body is None else body.get("event_id")


def _same_kind(outcome: Outcome, view: str) -> bool:
    return any(d.view == view for d in outcome.discrepancies)


def shrink(schedule: Schedule, found: Discrepancy, run: Run, budget: int = 40) -> Schedule:
    """A small schedule that still shows a discrepancy of ``found``'s view: first only the
    events it involves, then greedily without each event, each copy, each fault."""
    closer = found.view in SNAPSHOT_VIEWS
    ids = set(found.event_ids) or set(_element_ids(schedule))
    current = restrict(schedule, ids, closer)
    if not _same_kind(run(current), found.view):
        return schedule
    trials = 0
    for event_id in sorted(ids):
        if trials >= budget or len(ids) == 1:
            break
        trials += 1
        candidate = restrict(current, ids - {event_id}, closer)
        if candidate.chunks and _same_kind(run(candidate), found.view):
            ids.discard(event_id)
            current = candidate
    for k in range(len(current.chunks)):
        chunk = current.chunks[k] if k < len(current.chunks) else None
        if chunk is None or trials >= budget:
            break
        if chunk.fault != "none":
            trials += 1
            candidate = replace(
                current, chunks=_with(current.chunks, k, replace(chunk, fault="none"))
            )
            if _same_kind(run(candidate), found.view):
                current = candidate
        if len(current.chunks) > 1 and trials < budget:
            trials += 1
            candidate = replace(current, chunks=current.chunks[:k] + current.chunks[k + 1 :])
            if _same_kind(run(candidate), found.view):
                current = candidate
    if current.closer_faults and trials < budget:
        candidate = replace(current, closer_faults=())
        if _same_kind(run(candidate), found.view):
            current = candidate
    return current


def _with(chunks: tuple[Chunk, ...], k: int, chunk: Chunk) -> tuple[Chunk, ...]:
    return (*chunks[:k], chunk, *chunks[k + 1 :])


def describe(schedule: Schedule) -> list[str]:
    """The schedule in words, times relative to its start (and hour:minute UTC)."""

    def when(ms: int | None) -> str:
        if ms is None:
            return "none"
        rel = (ms - schedule.start_ms) / MINUTE_MS
        clock = (ms % (24 * HOUR_MS)) / MINUTE_MS
        return f"t{rel:+.3f}min({int(clock // 60):02d}:{clock % 60:06.3f})"

    lines = [
        f"seed {schedule.seed}, topology {schedule.topology}, start {schedule.start_ms}, "
        f"{len(schedule.chunks)} chunks, closer {'on' if schedule.closer else 'off'}"
    ]
    for chunk in schedule.chunks:
        fault = "" if chunk.fault == "none" else f" fault={chunk.fault}"
        if chunk.replay_at_ms:
            fault += f" replay@{when(chunk.replay_at_ms)}"
        lines.append(f"chunk read@{when(chunk.at_ms)}{fault}")
        for record in chunk.records:
            stamp = "log-append" if record.log_append else "create"
            lines.append(
                f"  record p{record.partition}/o{record.offset} {stamp}@"
                f"{when(record.record_ms)} {'batch' if record.batch else 'single'}"
            )
            for element in record.elements:
                body = element.body or {}
                occurred = body.get("occurred_at")
                at = when(occurred) if isinstance(occurred, int) else repr(occurred)
                lines.append(
                    f"    {body.get('event_id')} {body.get('event_type')} occurred@{at} "
                    f"org={body.get('organization_id')} {element.malformed or ''}"
                )
    for fault in schedule.closer_faults:
        lines.append(f"closer {fault.kind} at {when(fault.at_ms)} publish #{fault.call}")
    return lines
