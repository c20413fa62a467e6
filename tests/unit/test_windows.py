"""Event-time window arithmetic (voicemon/windows.py): pure functions of epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemon.windows import (
    day_closes_at,
    day_start,
    due_days,
    due_hours,
    global_watermark,
    hour_closes_at,
    hour_start,
    iso,
    utc,
)

T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z
T0_DT = datetime(2025, 11, 28, tzinfo=UTC)
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000

in_day = st.integers(min_value=0, max_value=DAY - 1)
instants = st.integers(min_value=T0 - 2 * DAY, max_value=T0 + 2 * DAY)


# -- utc / iso -------------------------------------------------------------------------------


def test_utc_fixed_instants() -> None:
    assert utc(T0) == T0_DT
    assert utc(T0).tzinfo is UTC
    assert utc(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert utc(T0 + 1_234) == datetime(2025, 11, 28, 0, 0, 1, 234_000, tzinfo=UTC)


def test_iso_fixed_instants() -> None:
    assert iso(T0) == "2025-11-28T00:00:00Z"
    assert iso(T0 + 13 * HOUR + 5 * MIN + 7_000) == "2025-11-28T13:05:07Z"
    assert iso(T0 + 1_234) == "2025-11-28T00:00:01.234000Z"
    assert iso(0) == "1970-01-01T00:00:00Z"


@given(offset=in_day)
def test_utc_and_iso_round_trip_over_a_day(offset: int) -> None:
    ms = T0 + offset
    expected = T0_DT + timedelta(milliseconds=offset)
    assert utc(ms) == expected
    text = iso(ms)
    assert text.endswith("Z")
    assert "+00:00" not in text
    assert text.startswith("2025-11-28T")
    assert datetime.fromisoformat(text) == expected


# -- hour_start / day_start ------------------------------------------------------------------


def test_hour_and_day_start_fixed() -> None:
    ms = T0 + 5 * HOUR + 59 * MIN + 59_999
    assert hour_start(ms) == T0 + 5 * HOUR
    assert day_start(ms) == T0
    assert hour_start(T0 + 5 * HOUR) == T0 + 5 * HOUR
    assert hour_start(T0 + 5 * HOUR - 1) == T0 + 4 * HOUR
    assert day_start(T0 - 1) == T0 - DAY
    assert day_start(T0 + DAY) == T0 + DAY


@given(offset=in_day)
def test_hour_start_matches_calendar_truncation(offset: int) -> None:
    ms = T0 + offset
    truncated = (T0_DT + timedelta(milliseconds=offset)).replace(minute=0, second=0, microsecond=0)
    assert utc(hour_start(ms)) == truncated
    assert hour_start(ms) <= ms < hour_start(ms) + HOUR


@given(offset=in_day)
def test_day_start_of_any_instant_in_the_day_is_midnight(offset: int) -> None:
    assert day_start(T0 + offset) == T0


# -- closing instants ------------------------------------------------------------------------


def test_hour_closes_at() -> None:
    assert hour_closes_at(T0, 0) == T0 + HOUR
    assert hour_closes_at(T0, 5 * MIN) == T0 + HOUR + 5 * MIN
    assert hour_closes_at(T0 + 23 * HOUR, 120_000) == T0 + DAY + 120_000


def test_day_closes_at_is_0130_next_day() -> None:
    assert day_closes_at(T0) == T0 + DAY + HOUR + 30 * MIN
    assert iso(day_closes_at(T0)) == "2025-11-29T01:30:00Z"


# -- global_watermark ------------------------------------------------------------------------


def test_global_watermark_none_while_a_partition_is_missing() -> None:
    assert global_watermark({}, 3) is None
    assert global_watermark({0: T0, 1: T0 + 5}, 3) is None
    assert global_watermark({0: T0, 2: T0 + 5}, 3) is None


def test_global_watermark_is_the_minimum() -> None:
    assert global_watermark({0: T0 + 10, 1: T0 + 3, 2: T0 + 7}, 3) == T0 + 3
    assert global_watermark({0: T0}, 1) == T0


def test_global_watermark_ignores_partitions_outside_the_range() -> None:
    # partition 5 is not an input partition when there are 2
    assert global_watermark({0: T0 + 10, 1: T0 + 20, 5: T0}, 2) == T0 + 10
    assert global_watermark({1: T0, 2: T0}, 2) is None


@given(
    newest=st.dictionaries(st.integers(0, 7), instants, max_size=8),
    partitions=st.integers(1, 8),
)
def test_global_watermark_property(newest: dict[int, int], partitions: int) -> None:
    result = global_watermark(newest, partitions)
    if all(p in newest for p in range(partitions)):
        expected = newest[0]
        for p in range(1, partitions):
            if newest[p] < expected:
                expected = newest[p]
        assert result == expected
    else:
        assert result is None


# -- due_hours -------------------------------------------------------------------------------

GRACE = 5 * MIN


def test_due_hours_by_wall_clock_boundary() -> None:
    assert due_hours(T0, T0 + HOUR + GRACE - 1, None, GRACE) == []
    assert due_hours(T0, T0 + HOUR + GRACE, None, GRACE) == [T0]
    assert due_hours(T0, T0 + 2 * HOUR + GRACE - 1, None, GRACE) == [T0]
    assert due_hours(T0, T0 + 3 * HOUR + GRACE, None, GRACE) == [T0, T0 + HOUR, T0 + 2 * HOUR]


def test_due_hours_watermark_ahead_of_wall_clock() -> None:
    assert due_hours(T0, T0, T0 + 2 * HOUR + GRACE, GRACE) == [T0, T0 + HOUR]


def test_due_hours_wall_clock_ahead_of_watermark() -> None:
    assert due_hours(T0, T0 + 2 * HOUR + GRACE, T0, GRACE) == [T0, T0 + HOUR]


def test_due_hours_none_before_next_hour_closes() -> None:
    assert due_hours(T0 + 10 * HOUR, T0 + 10 * HOUR + 30 * MIN, None, 0) == []


@given(
    next_offset=st.integers(0, 23).map(lambda h: h * HOUR),
    now_offset=st.integers(0, 2 * DAY),
    watermark_offset=st.none() | st.integers(0, 2 * DAY),
    grace=st.integers(0, 30 * MIN),
)
def test_due_hours_property(
    next_offset: int, now_offset: int, watermark_offset: int | None, grace: int
) -> None:
    next_hour = T0 + next_offset
    now = T0 + now_offset
    watermark = None if watermark_offset is None else T0 + watermark_offset
    horizon = now if watermark is None else max(now, watermark)
    # independent reference: a closed-form count instead of the loop
    count = max(0, (horizon - next_hour - grace) // HOUR)
    expected = [next_hour + i * HOUR for i in range(count)]
    result = due_hours(next_hour, now, watermark, grace)
    assert result == expected
    for hour in result:
        assert hour + HOUR + grace <= horizon
    after = next_hour + len(result) * HOUR
    assert after + HOUR + grace > horizon


# -- due_days --------------------------------------------------------------------------------

D_CLOSE = DAY + HOUR + 30 * MIN


def test_due_days_waits_until_0130_next_day() -> None:
    all_hours_closed = T0 + DAY
    assert due_days(T0, T0 + D_CLOSE - 1, all_hours_closed) == []
    assert due_days(T0, T0 + D_CLOSE, all_hours_closed) == [T0]


def test_due_days_waits_for_all_24_hours() -> None:
    late = T0 + 5 * DAY
    assert due_days(T0, late, T0 + 23 * HOUR) == []
    assert due_days(T0, late, T0 + DAY - 1) == []
    assert due_days(T0, late, T0 + DAY) == [T0]
    assert due_days(T0, late, T0 + DAY + 3 * HOUR) == [T0]
    assert due_days(T0, late, T0 + 3 * DAY) == [T0, T0 + DAY, T0 + 2 * DAY]


def test_due_days_limited_by_the_clock() -> None:
    now = T0 + 2 * DAY + HOUR + 30 * MIN  # day T0+1d closes exactly now
    assert due_days(T0, now, T0 + 10 * DAY) == [T0, T0 + DAY]
    assert due_days(T0, now - 1, T0 + 10 * DAY) == [T0]


@given(
    now_offset=st.integers(0, 5 * DAY),
    next_hour_offset=st.integers(0, 5 * DAY).map(lambda ms: ms - ms % HOUR),
)
def test_due_days_property(now_offset: int, next_hour_offset: int) -> None:
    now, next_hour = T0 + now_offset, T0 + next_hour_offset
    by_clock = max(0, (now - T0 - D_CLOSE) // DAY + 1)
    by_hours = (next_hour - T0) // DAY
    count = min(by_clock, by_hours)
    assert due_days(T0, now, next_hour) == [T0 + i * DAY for i in range(count)]


@pytest.mark.parametrize("grace", [0, 1, GRACE])
def test_due_hours_consecutive_from_next_hour(grace: int) -> None:
    hours = due_hours(T0 + 7 * HOUR, T0 + DAY + grace, None, grace)
    assert hours == [T0 + h * HOUR for h in range(7, 24)]
