"""``voicemon replay``: recompute and re-emit the closed windows of a range, idempotently.

Hours are recomputed from raw events, but only those whose raw events are all still
retained (an hour starting 48 h minus the grace ago or later); days are merged again from
their hourly rows.
Each window's rows are compared with the newest rows before, to say what changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aggregators.closer import WindowCloser
from aggregators.snapshot_rows import COMPARED_COLUMNS, DAILY, HOURLY
from voicemon import windows
from voicemon.store import Client
from voicemon.window_state import WindowState
from voicemon.windows import DAY_MS, HOUR_MS


@dataclass(slots=True)
class ReplayReport:
    windows: list[str] = field(default_factory=list)
    unchanged: int = 0
    changed: int = 0
    added: int = 0


async def plan(
    closer: WindowCloser, state: WindowState, start_ms: int, end_ms: int, now_ms: int
) -> list[tuple[str, int]]:
    """The closed windows of [start, end] that can be recomputed, hours before days: hours
    whose raw events are surely all retained (``WindowCloser.recomputable``)."""
    pointers = await state.pointers()
    if pointers is None:  # nothing was ever closed
        return []
    hours = range(windows.hour_start(start_ms), end_ms + 1, HOUR_MS)
    days = range(windows.day_start(start_ms), end_ms + 1, DAY_MS)
    closed = [h for h in hours if h < pointers.next_hour]
    return [(HOURLY, h) for h in closed if closer.recomputable(h, now_ms)] + [
        (DAILY, d) for d in days if pointers.day_closed(d)
    ]


def _latest(
    store: Client, period_type: str, start_ms: int
) -> dict[tuple[str, str], tuple[Any, ...]]:
    result = store.query(
        f"SELECT {', '.join(COMPARED_COLUMNS)} FROM voicemon.snapshots_latest "
        "WHERE period_type = {p:String} AND period_start = fromUnixTimestamp({s:Int64})",
        parameters={"p": period_type, "s": start_ms // 1000},
    )
    return {(row[0], row[1]): tuple(row) for row in result.result_rows}


async def replay(
    closer: WindowCloser,
    state: WindowState,
    store: Client,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    on_window: Callable[[int, int], None] = lambda done, total: None,
) -> ReplayReport:
    report = ReplayReport()
    planned = await plan(closer, state, start_ms, end_ms, now_ms)
    for done, (period_type, window_start) in enumerate(planned, start=1):
        before = await asyncio.to_thread(_latest, store, period_type, window_start)
        emitted = await closer.emit(period_type, window_start, now_ms)
        for row in emitted.snapshots:
            previous = before.get((row.scope, row.organization_id))
            current = tuple(getattr(row, c) for c in COMPARED_COLUMNS)
            if previous is None:
                report.added += 1
            elif _same(previous, current):
                report.unchanged += 1
            else:
                report.changed += 1
        report.windows.append(f"{period_type}:{windows.utc(window_start).isoformat()}")
        on_window(done, len(planned))
    return report


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(
        abs(x - y) <= 1e-9 * max(1.0, abs(x)) if isinstance(x, float) else x == y
        for x, y in zip(a, b, strict=True)
    )
