"""Rolling one-hour counters (CONTRACT §5): the pure arithmetic shared by writer and reader.

The window is 60 one-minute buckets by event time: the current minute and the 59 before.
Each bucket of each scope is one Redis sorted set: its members are the counter fields, its
scores their values (counts, and the float sums of fields ending in ``_sum``).
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
    """Sum a batch of newly counted events into per-bucket increments (platform + org).

    Events are first summed per (minute, organization, type, stage), a handful of groups per
    batch, so the per-event work is one dictionary update."""
    oldest = first_minute(now_ms)
    groups: dict[tuple[int, str | None, EventType, str | None], _Group] = {}
    for event in events:
        minute = event.occurred_at_ms // MINUTE_MS
        if minute < oldest:
            continue
        key = (minute, event.organization_id, event.event_type, event.stage)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
        group.add(event)
    buckets: dict[tuple[str | None, int], BucketIncrement] = {}  # by (scope, minute)
    for (minute, organization_id, event_type, stage), group in groups.items():
        fields = group.fields(event_type, stage)
        for scope in (None,) if organization_id is None else (None, organization_id):
            bucket = buckets.get((scope, minute))
            if bucket is None:
                bucket = BucketIncrement(minute * MINUTE_MS + BUCKET_TTL_MS, defaultdict(float))
                buckets[scope, minute] = bucket
            for field, value in fields:
                bucket.fields[field] += value
    # Named once per bucket, not once per group: a chunk of single events has about as many
    # groups as events.
    return {keys.rolling_counter(scope, minute): bucket
            for (scope, minute), bucket in buckets.items()}  # fmt: skip


@dataclass(slots=True)
class _Group:
    """What the events of one (minute, organization, type, stage) add up to."""

    count: int = 0
    duration_sum: float = 0.0
    duration_n: int = 0
    cost_sum: float = 0.0
    cost_n: int = 0

    def add(self, event: PipelineEvent) -> None:
        self.count += 1
        if event.duration_ms is not None:
            self.duration_sum += event.duration_ms
            self.duration_n += 1
        if event.ai_cost_usd is not None:
            self.cost_sum += event.ai_cost_usd
            self.cost_n += 1

    def fields(self, event_type: EventType, stage: str | None) -> list[tuple[str, float]]:
        cost = self.cost_sum if self.cost_n else None
        count, durations, duration_sum = self.count, self.duration_n, self.duration_sum
        return counter_fields(event_type, stage, count, durations, duration_sum, cost)


def counter_fields(
    event_type: EventType,
    stage: str | None,
    count: int,
    durations: int,
    duration_sum: float,
    cost: float | None,
) -> list[tuple[str, float]]:
    """The bucket fields that ``count`` events of one type and stage add, ``durations`` of
    them with a duration summing to ``duration_sum``, costing ``cost`` (None: no field).
    The one definition of the counter field names: ingest (``increments``) and the rebuild
    from raw events (``consumers.counter_rebuild``) both write through it."""
    fields: list[tuple[str, float]] = [] if cost is None else [("cost_sum", cost)]
    if stage is None:
        fields.append((_ARTIFACT_FIELDS[event_type], count))
        if event_type is EventType.ARTIFACT_COMPLETED and durations:
            fields += [("latency_sum", duration_sum), ("latency_n", durations)]
        return fields
    prefix = f"stage:{stage}:"
    fields.append((prefix + _STAGE_FIELDS[event_type], count))
    if event_type is EventType.STAGE_COMPLETED and durations:
        fields += [(prefix + "duration_sum", duration_sum), (prefix + "duration_n", durations)]
    return fields


def negated(buckets: Mapping[str, BucketIncrement]) -> dict[str, BucketIncrement]:
    """The increments that take ``buckets`` back."""
    return {
        key: BucketIncrement(bucket.expire_at_ms, {k: -v for k, v in bucket.fields.items()})
        for key, bucket in buckets.items()
    }


def ratio(numerator: float, denominator: float) -> float:
    """Safe division: 0 when the denominator is 0 (CONTRACT §4)."""
    return numerator / denominator if denominator else 0.0


def view(
    totals: Mapping[str, float],
    *,
    organization_id: str | None,
    now_ms: int,
    stages: Iterable[str],
) -> dict[str, Any]:
    """The §5 real-time view from each counter field's total over the window (a field absent
    from them is 0)."""
    totals = defaultdict(float, totals)
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
