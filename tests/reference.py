"""An independent reference for CONTRACT §4: plain Python over plain event dicts.

It shares no code with voicemon on purpose: tests compare voicemon's numbers with these.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_ms(event: dict[str, Any]) -> int:
    value = event["occurred_at"]
    if isinstance(value, int):
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(milliseconds=1)


def first_occurrences(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event_id once: the first time it was published."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            unique.append(event)
    return unique


def safe_ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def nearest_rank(samples: list[float], p: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = math.floor(Fraction(str(p)) * len(ordered))  # exact: no float rounding
    return ordered[min(rank, len(ordered) - 1)]


def metrics(events: Iterable[dict[str, Any]], stages: Iterable[str]) -> dict[str, Any]:
    """The §4 numbers of one period and scope (events already deduplicated and filtered)."""
    events = list(events)
    types = Counter(e["event_type"] for e in events)
    latencies = [
        float(e["duration_ms"])
        for e in events
        if e["event_type"] == "artifact_completed" and e.get("duration_ms") is not None
    ]
    completed, failed = types["artifact_completed"], types["artifact_failed"]
    result: dict[str, Any] = {
        "artifacts_received": types["artifact_received"],
        "artifacts_completed": completed,
        "artifacts_failed": failed,
        "failure_rate": safe_ratio(failed, completed + failed),
        "avg_latency_ms": safe_ratio(sum(latencies), len(latencies)),
        "p50_latency_ms": nearest_rank(latencies, 0.50),
        "p95_latency_ms": nearest_rank(latencies, 0.95),
        "p99_latency_ms": nearest_rank(latencies, 0.99),
        "ai_cost_usd": sum(float(e.get("ai_cost_usd") or 0) for e in events),
        "stages": {},
    }
    for stage in stages:
        of_stage = [e for e in events if e.get("stage") == stage]
        counts = Counter(e["event_type"] for e in of_stage)
        durations = [
            float(e["duration_ms"])
            for e in of_stage
            if e["event_type"] == "stage_completed" and e.get("duration_ms") is not None
        ]
        s_completed, s_failed = counts["stage_completed"], counts["stage_failed"]
        result["stages"][stage] = {
            "started": counts["stage_started"],
            "completed": s_completed,
            "failed": s_failed,
            "failure_rate": safe_ratio(s_failed, s_completed + s_failed),
            "avg_duration_ms": safe_ratio(sum(durations), len(durations)),
            "p95_duration_ms": nearest_rank(durations, 0.95),
        }
    return result


# -- CONTRACT §3.2: the time rules of one copy, decided once at its first delivery ---------

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
FUTURE_LIMIT_MS = 5 * MINUTE_MS  # "more than 5 minutes in the future" is rejected
RETENTION_MS = 48 * HOUR_MS  # "older than the raw retention (48 h)" is too late
CREATE_TIME_TRUST_MS = 5 * MINUTE_MS  # a create time within 5 min of the clock, either side


def decision_now(record_ms: int | None, log_append: bool, clock_ms: int) -> int:
    """The "now" of the future rule and of the record side of the late rule: the log-append
    time; a create time only within 5 minutes of the worker's clock; else the clock."""
    if record_ms is None or record_ms < 0:
        return clock_ms
    if log_append or abs(record_ms - clock_ms) <= CREATE_TIME_TRUST_MS:
        return record_ms
    return clock_ms


def time_verdict(occurred_ms: int, record_ms: int | None, log_append: bool, clock_ms: int) -> str:
    """'accepted', 'future_timestamp' or 'too_late' for a well-formed event (§3.2): too late by
    its record's time or by the worker's clock."""
    now = decision_now(record_ms, log_append, clock_ms)
    if occurred_ms > now + FUTURE_LIMIT_MS:
        return "future_timestamp"
    if occurred_ms < now - RETENTION_MS or occurred_ms < clock_ms - RETENTION_MS:
        return "too_late"
    return "accepted"


# -- CONTRACT §5: the rolling window, by event time, one-minute buckets --------------------


def in_rolling_window(occurred_ms: int, counted_at_ms: int, read_at_ms: int) -> bool:
    """Whether an event counted at ``counted_at_ms`` shows in a real-time read at
    ``read_at_ms``: its minute is one of the 60 ending with the read's minute, and was still
    inside the window when it was counted (an older minute is no longer kept)."""
    minute = occurred_ms // MINUTE_MS
    if minute < counted_at_ms // MINUTE_MS - 59:
        return False
    return read_at_ms // MINUTE_MS - 59 <= minute <= read_at_ms // MINUTE_MS


def rolling_totals(events: Iterable[dict[str, Any]], stages: Iterable[str]) -> dict[str, Any]:
    """The §5 counts and sums of the events in a window (plain numbers, no ratios)."""
    events = list(events)
    totals: dict[str, Any] = {
        "artifacts_received": 0,
        "artifacts_completed": 0,
        "artifacts_failed": 0,
        "ai_cost_usd": 0.0,
        "latency_sum": 0.0,
        "latency_n": 0,
        "stages": {stage: {"started": 0, "completed": 0, "failed": 0} for stage in stages},
    }
    names = {
        "artifact_received": "artifacts_received",
        "artifact_completed": "artifacts_completed",
        "artifact_failed": "artifacts_failed",
    }
    for event in events:
        kind = event["event_type"]
        totals["ai_cost_usd"] += float(event.get("ai_cost_usd") or 0)
        if kind in names:
            totals[names[kind]] += 1
            if kind == "artifact_completed" and event.get("duration_ms") is not None:
                totals["latency_sum"] += float(event["duration_ms"])
                totals["latency_n"] += 1
        elif event.get("stage") in totals["stages"]:
            totals["stages"][event["stage"]][kind.removeprefix("stage_")] += 1
    return totals


def hour_of(ms: int) -> int:
    return ms - ms % HOUR_MS


def day_of(ms: int) -> int:
    return ms - ms % DAY_MS
