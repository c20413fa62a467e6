"""Event-time windows (CONTRACT §3.2, §6.1): pure arithmetic on UTC epoch milliseconds."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
DAY_CLOSE_DELAY_MS = HOUR_MS + 30 * MINUTE_MS  # the seed's 01:30 UTC


def utc(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def iso(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with ``Z`` (CONTRACT §7)."""
    return utc(ms).isoformat().replace("+00:00", "Z")


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def hour_closes_at(hour_ms: int, grace_ms: int) -> int:
    return hour_ms + HOUR_MS + grace_ms


def day_closes_at(day_ms: int) -> int:
    return day_ms + DAY_MS + DAY_CLOSE_DELAY_MS


def global_watermark(newest_by_partition: Mapping[int, int], partitions: int) -> int | None:
    """The minimum over all input partitions of the newest event time durably written from
    each; None while any partition has written nothing."""
    values = [newest_by_partition.get(p) for p in range(partitions)]
    return None if any(v is None for v in values) else min(v for v in values if v is not None)


def due_hours(next_hour: int, now_ms: int, watermark: int | None, grace_ms: int) -> list[int]:
    """Hours from ``next_hour`` on that may close: watermark or wall clock past H+1h+grace."""
    horizon = max(now_ms, watermark if watermark is not None else now_ms)
    hours = []
    hour = next_hour
    while hour_closes_at(hour, grace_ms) <= horizon:
        hours.append(hour)
        hour += HOUR_MS
    return hours


def due_days(next_day: int, now_ms: int, next_hour: int) -> list[int]:
    """Days from ``next_day`` on that may close: past D+1d+1h30m with all 24 hours closed."""
    days = []
    day = next_day
    while day_closes_at(day) <= now_ms and next_hour >= day + DAY_MS:
        days.append(day)
        day += DAY_MS
    return days
