"""``voicemon replay``: recompute and re-emit the closed windows of a range, idempotently.

Only windows whose inputs are all still retained are recomputed (CONTRACT §6.1,
``WindowCloser.recomputable``): an hour whose raw events may be partly deleted (it starts
more than 48 h minus the grace ago) and a day whose hourly rows may be partly deleted (it
starts more than 7 days ago) keep their rows, and the report says which and why.
Each window's rows are compared with the newest rows before, to say what changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aggregators.closing.closer import NotPublished, WindowCloser
from aggregators.closing.window_state import WindowState
from aggregators.snapshot_rows import COMPARED_COLUMNS, DAILY, HOURLY
from voicemon import windows
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS


@dataclass(slots=True)
class RecomputeReport:
    windows: list[str] = field(default_factory=list)
    unchanged: int = 0
    changed: int = 0
    added: int = 0
    kept: dict[str, str] = field(default_factory=dict)  # window -> why it kept its row
    unpublished: list[str] = field(default_factory=list)  # written; the closer publishes them


@dataclass(frozen=True, slots=True)
class Plan:
    recompute: list[tuple[str, int]]  # hours before days
    kept: dict[str, str]


def _label(period_type: str, start_ms: int) -> str:
    return f"{period_type}:{windows.utc(start_ms).isoformat()}"


async def plan(
    closer: WindowCloser, state: WindowState, start_ms: int, end_ms: int, now_ms: int
) -> Plan:
    """The closed windows of [start, end]: those to recompute, and those that keep their
    rows because their inputs may be partly gone (with the reason)."""
    pointers = await state.pointers()
    if pointers is None:  # nothing was ever closed
        return Plan([], {})
    hours = range(windows.hour_start(start_ms), end_ms + 1, HOUR_MS)
    days = range(windows.day_start(start_ms), end_ms + 1, DAY_MS)
    closed = [(HOURLY, h) for h in hours if h < pointers.next_hour]
    closed += [(DAILY, d) for d in days if pointers.day_closed(d)]
    recompute = [w for w in closed if closer.recomputable(*w, now_ms)]
    kept = {
        _label(*w): closer.kept_because(*w, now_ms)
        for w in closed
        if not closer.recomputable(*w, now_ms)
    }
    return Plan(recompute, kept)


def _latest(
    store: Client, period_type: str, start_ms: int
) -> dict[tuple[str, str], tuple[Any, ...]]:
    result = store.query(
        f"SELECT {', '.join(COMPARED_COLUMNS)} FROM voicemon.snapshots_latest "
        "WHERE period_type = {p:String} AND period_start = fromUnixTimestamp({s:Int64})",
        parameters={"p": period_type, "s": start_ms // 1000},
    )
    return {(row[0], row[1]): tuple(row) for row in result.result_rows}


async def recompute(
    closer: WindowCloser,
    state: WindowState,
    store: Client,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    on_window: Callable[[int, int], None] = lambda done, total: None,
) -> RecomputeReport:
    planned = await plan(closer, state, start_ms, end_ms, now_ms)
    report = RecomputeReport(kept=planned.kept)
    for done, (period_type, window_start) in enumerate(planned.recompute, start=1):
        before = await asyncio.to_thread(_latest, store, period_type, window_start)
        label = _label(period_type, window_start)
        try:
            emitted = await closer.emit(period_type, window_start, now_ms)
        except NotPublished:
            emitted = None
            report.unpublished.append(label)
        for row in emitted.snapshots if emitted else []:
            previous = before.get((row.scope, row.organization_id))
            current = tuple(getattr(row, c) for c in COMPARED_COLUMNS)
            if previous is None:
                report.added += 1
            elif _same(previous, current):
                report.unchanged += 1
            else:
                report.changed += 1
        if emitted:
            report.windows.append(label)
        on_window(done, len(planned.recompute))
    return report


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(
        abs(x - y) <= 1e-9 * max(1.0, abs(x)) if isinstance(x, float) else x == y
        for x, y in zip(a, b, strict=True)
    )
