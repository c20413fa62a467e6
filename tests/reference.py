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
