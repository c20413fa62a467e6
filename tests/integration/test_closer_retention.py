"""A recomputation never replaces a retained row with one made from data that is gone
(CONTRACT §6, §6.1; issue 16 item 8): replay and late-event re-emission at the retention
edges of hours (raw events, 48 h minus the grace) and days (hourly rows, 7 days), with an
injected clock, the real Redis and the embedded store."""

from __future__ import annotations

from typing import Any

import pytest

from aggregators.closing import retention
from aggregators.closing.recompute import RecomputeReport, recompute
from aggregators.closing.window_state import WindowState
from consumers.raw_writer import RawWriter
from consumers.rows import Position, RawRow
from tests.integration.test_closer import GRACE_MS, Clock, State, closer, redis_url, run
from voicemon import windows
from voicemon.event import EventType, PipelineEvent
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS

__all__ = ["redis_url"]  # the fixture, shared with test_closer
RAW_EDGE_MS = 48 * HOUR_MS - GRACE_MS  # an hour this old is still recomputed; 1 ms more: kept
HOURLY_EDGE_MS = 7 * DAY_MS  # a day this old is still merged again; 1 ms more: kept


def write_events(store: Client, prefix: str, starts: range, per_hour: int) -> None:
    def event(hour: int, i: int) -> PipelineEvent:
        return PipelineEvent(f"{prefix}-{hour}-{i}", EventType.ARTIFACT_RECEIVED, hour + i, "art",
                             "org-a")  # fmt: skip

    rows = [
        RawRow(event(hour, i), Position(0, n * per_hour + i, 0))
        for n, hour in enumerate(starts)
        for i in range(per_hour)
    ]
    RawWriter(store).write(rows)


def latest(store: Client, period_type: str, start_ms: int) -> dict[str, tuple[int, int]]:
    """scope -> (artifacts_received, version) of the window's newest rows."""
    rows = store.query(
        "SELECT scope, artifacts_received, version FROM voicemon.snapshots_latest "
        "WHERE period_type = {p:String} AND period_start = fromUnixTimestamp64Milli({s:Int64})",
        parameters={"p": period_type, "s": start_ms},
    ).result_rows
    return {scope: (int(received), int(version)) for scope, received, version in rows}


async def close_all(state: WindowState, store: Client, clock: Clock) -> Any:
    c = closer(state, store, clock, max_windows_per_tick=200)
    while (await c.tick()).emitted:
        pass
    return c


@pytest.mark.parametrize("past_edge_ms", [-1, 0, 1, DAY_MS])
def test_replay_keeps_a_day_whose_hourly_rows_are_past_their_retention(
    clean_store: Client, redis_url: str, now_ms: int, past_edge_ms: int
) -> None:
    day = windows.day_start(now_ms) - DAY_MS
    write_events(clean_store, "d", range(day, day + DAY_MS, HOUR_MS), 10)  # 240 events
    clock = Clock(day + DAY_MS + 90 * 60_000 + 1)  # the day closes at D + 1 d + 1h30m

    async def scenario(state: State) -> tuple[dict[str, Any], RecomputeReport]:
        c = await close_all(state, clean_store, clock)
        closed = latest(clean_store, "daily", day)
        clock.ms = day + HOURLY_EDGE_MS + past_edge_ms
        retention.run(clean_store, clock.ms)  # the hourly rows the 7-day retention drops
        report = await recompute(c, state, clean_store, day, day + DAY_MS - 1, clock.ms)
        return closed, report

    closed, report = run(redis_url, scenario)
    assert {scope: n for scope, (n, _) in closed.items()} == {"platform": 240, "organization": 240}
    after = latest(clean_store, "daily", day)
    label = f"daily:{windows.utc(day).isoformat()}"
    if past_edge_ms > 0:
        assert after == closed  # not rewritten from the hourly rows that are left (or none)
    # Every hour's raw events are gone (7 days old): each hour keeps its row and says why.
    hours = [f"hourly:{windows.utc(h).isoformat()}" for h in range(day, day + DAY_MS, HOUR_MS)]
    assert all("raw events" in report.kept[h] for h in hours)
    if past_edge_ms <= 0:  # every hourly row is retained: the day is merged again, the same
        assert report.windows == [label] and label not in report.kept
        assert {scope: n for scope, (n, _) in after.items()} == {
            "platform": 240, "organization": 240}  # fmt: skip
        assert all(after[s][1] > closed[s][1] for s in after)
    else:  # its first hour (or all) is gone: the day keeps its rows, and the report says why
        assert report.windows == [] and "hourly rows" in report.kept[label]
        assert after == closed


@pytest.mark.parametrize("past_edge_ms", [-1, 0, 1])
def test_replay_keeps_an_hour_whose_raw_events_may_be_partly_gone(
    clean_store: Client, redis_url: str, now_ms: int, past_edge_ms: int
) -> None:
    hour = windows.hour_start(now_ms) - 40 * HOUR_MS
    write_events(clean_store, "h", range(hour, hour + 1, HOUR_MS), 10)
    clock = Clock(hour + HOUR_MS + GRACE_MS + 1)

    async def scenario(state: State) -> tuple[dict[str, Any], RecomputeReport]:
        c = await close_all(state, clean_store, clock)
        closed = latest(clean_store, "hourly", hour)
        clock.ms = hour + RAW_EDGE_MS + past_edge_ms
        return closed, await recompute(c, state, clean_store, hour, hour, clock.ms)

    closed, report = run(redis_url, scenario)
    after = latest(clean_store, "hourly", hour)
    label = f"hourly:{windows.utc(hour).isoformat()}"
    if past_edge_ms > 0:
        assert after == closed
    assert {scope: n for scope, (n, _) in after.items()} == {"platform": 10, "organization": 10}
    if past_edge_ms <= 0:
        assert report.windows == [label] and report.unchanged == 2 and not report.kept
        assert all(after[s][1] > closed[s][1] for s in after)
    else:
        assert report.windows == [] and "raw events" in report.kept[label]
        assert after == closed


@pytest.mark.parametrize("past_edge_ms", [-1, 0, 1])
def test_a_late_event_at_the_raw_retention_edge_is_stored_and_keeps_or_redoes_its_hour(
    clean_store: Client, redis_url: str, now_ms: int, past_edge_ms: int
) -> None:
    hour = windows.hour_start(now_ms) - 40 * HOUR_MS
    write_events(clean_store, "l", range(hour, hour + 1, HOUR_MS), 10)
    clock = Clock(hour + HOUR_MS + GRACE_MS + 1)
    debounce = 5_000

    async def scenario(state: State) -> tuple[dict[str, Any], list[str], list[str]]:
        c = await close_all(state, clean_store, clock)
        closed = latest(clean_store, "hourly", hour)
        clock.ms = hour + RAW_EDGE_MS + past_edge_ms - debounce
        write_events(clean_store, "late", range(hour + 500, hour + 501), 1)
        assert await state.progress.record_written({0: hour + 500}, {hour: 1}, clock.ms) == 1
        clock.ms += debounce  # the tick that takes the late mark runs at the edge
        report = await c.tick()
        return closed, report.emitted, report.kept

    closed, emitted, kept = run(redis_url, scenario)
    after = latest(clean_store, "hourly", hour)
    raw = clean_store.query("SELECT count() FROM voicemon.pipeline_events").result_rows[0][0]
    assert raw == 11  # the late event is stored either way
    if past_edge_ms <= 0:
        assert f"hourly:{hour}" in emitted
        assert {scope: n for scope, (n, _) in after.items()} == {"platform": 11, "organization": 11}
    else:
        assert kept == [f"hourly:{hour}"] and f"hourly:{hour}" not in emitted
        assert after == closed
