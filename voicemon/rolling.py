"""Rolling one-hour counters (CONTRACT §5): the pure arithmetic shared by writer and reader.

The window is 60 one-minute buckets by event time: the current minute and the 59 before.
Each bucket of each scope is one Redis hash; fields ending in ``_sum`` hold floats.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from voicemon import keys
from voicemon.event import EventType, PipelineEvent
from voicemon.windows import MINUTE_MS, iso

WINDOW_MINUTES = 60
# A bucket lives until it has left the window, plus a little slack for clock skew.
BUCKET_TTL_MS = (WINDOW_MINUTES + 5) * MINUTE_MS

_ARTIFACT_FIELDS = {
    EventType.ARTIFACT_RECEIVED: "received",
    EventType.ARTIFACT_COMPLETED: "completed",
    EventType.ARTIFACT_FAILED: "failed",
}
_STAGE_FIELDS = {
    EventType.STAGE_STARTED: "started",
    EventType.STAGE_COMPLETED: "completed",
    EventType.STAGE_FAILED: "failed",
}


@dataclass(slots=True)
class BucketIncrement:
    """What one batch adds to one bucket hash."""

    expire_at_ms: int
    fields: dict[str, float]


def first_minute(now_ms: int) -> int:
    """The oldest minute still inside the window at ``now_ms``."""
    return now_ms // MINUTE_MS - (WINDOW_MINUTES - 1)


def increments(events: Iterable[PipelineEvent], now_ms: int) -> dict[str, BucketIncrement]:
    """Sum a batch of newly counted events into per-bucket increments (platform + org)."""
    oldest = first_minute(now_ms)
    buckets: dict[str, BucketIncrement] = {}
    for event in events:
        minute = event.occurred_at_ms // MINUTE_MS
        if minute < oldest:
            continue
        fields = _event_fields(event)
        for organization_id in {None, event.organization_id}:
            key = keys.rolling_counter(organization_id, minute)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = BucketIncrement(minute * MINUTE_MS + BUCKET_TTL_MS, defaultdict(float))
                buckets[key] = bucket
            for name, value in fields:
                bucket.fields[name] += value
    return buckets


def negated(buckets: Mapping[str, BucketIncrement]) -> dict[str, BucketIncrement]:
    """The increments that take ``buckets`` back."""
    return {
        key: BucketIncrement(bucket.expire_at_ms, {k: -v for k, v in bucket.fields.items()})
        for key, bucket in buckets.items()
    }


def _event_fields(event: PipelineEvent) -> list[tuple[str, float]]:
    fields: list[tuple[str, float]] = []
    if event.ai_cost_usd is not None:
        fields.append(("cost_sum", event.ai_cost_usd))
    if event.stage is None:
        fields.append((_ARTIFACT_FIELDS[event.event_type], 1))
        if event.event_type is EventType.ARTIFACT_COMPLETED and event.duration_ms is not None:
            fields += [("latency_sum", event.duration_ms), ("latency_n", 1)]
        return fields
    prefix = f"stage:{event.stage}:"
    fields.append((prefix + _STAGE_FIELDS[event.event_type], 1))
    if event.event_type is EventType.STAGE_COMPLETED and event.duration_ms is not None:
        fields += [(prefix + "duration_sum", event.duration_ms), (prefix + "duration_n", 1)]
    return fields


def ratio(numerator: float, denominator: float) -> float:
    """Safe division: 0 when the denominator is 0 (CONTRACT §4)."""
    return numerator / denominator if denominator else 0.0


def summarize(
    buckets: Iterable[Mapping[bytes, bytes]],
    *,
    organization_id: str | None,
    now_ms: int,
    stages: Iterable[str],
) -> dict[str, Any]:
    """The §5 real-time view from the window's bucket hashes."""
    totals: dict[str, float] = defaultdict(float)
    for bucket in buckets:
        for name, value in bucket.items():
            totals[name.decode()] += float(value)
    received, completed, failed = (int(totals[n]) for n in ("received", "completed", "failed"))
    return {
        "organization_id": organization_id,
        "window_start": iso(first_minute(now_ms) * MINUTE_MS),
        "window_end": iso((now_ms // MINUTE_MS + 1) * MINUTE_MS),
        "as_of": iso(now_ms),
        "artifacts_received": received,
        "artifacts_completed": completed,
        "artifacts_failed": failed,
        "failure_rate": ratio(failed, completed + failed),
        "avg_latency_ms": ratio(totals["latency_sum"], totals["latency_n"]),
        "ai_cost_usd": totals["cost_sum"],
        "stages": {stage: _stage_summary(totals, stage) for stage in stages},
    }


def _stage_summary(totals: Mapping[str, float], stage: str) -> dict[str, float]:
    prefix = f"stage:{stage}:"
    started, completed, failed = (
        int(totals[prefix + n]) for n in ("started", "completed", "failed")
    )
    return {
        "started": started,
        "completed": completed,
        "failed": failed,
        "failure_rate": ratio(failed, completed + failed),
        "avg_duration_ms": ratio(totals[prefix + "duration_sum"], totals[prefix + "duration_n"]),
    }
