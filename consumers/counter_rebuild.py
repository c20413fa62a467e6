"""Rebuild the rolling counters of CONTRACT §5 from the raw events of the last hour.

Used when the rolling-counter keys were lost (a Redis flush or a Redis without its data):
the window's buckets are recomputed in one ClickHouse query and replace what Redis holds.
Exact when no event is counted meanwhile — the worker pauses ingest while it rebuilds.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from consumers.rolling_counters import RollingCounters
from voicemon import keys
from voicemon.event import EventType
from voicemon.rolling import BUCKET_TTL_MS, BucketIncrement, counter_fields, first_minute
from voicemon.store import Client
from voicemon.windows import MINUTE_MS

_SQL = """
SELECT minute, organization, event_type, stage, events, durations, duration_sum, cost
FROM (
    SELECT
        intDiv(toUnixTimestamp64Milli(occurred_at), 60000) AS minute,
        ifNull(organization_id, '') AS organization,
        event_type,
        ifNull(stage, '') AS stage,
        count() AS events,
        countIf(duration_ms IS NOT NULL) AS durations,
        sum(ifNull(duration_ms, 0)) AS duration_sum,
        sum(ifNull(ai_cost_usd, 0)) AS cost
    FROM (
        SELECT occurred_at, organization_id, event_type, stage, duration_ms, ai_cost_usd
        FROM voicemon.pipeline_events
        WHERE occurred_at >= fromUnixTimestamp64Milli({start:Int64})
        LIMIT 1 BY event_id
    )
    GROUP BY minute, organization, event_type, stage
)
"""


def bucket_fields(row: Sequence[Any]) -> dict[str, float]:
    """The counter fields one aggregated row adds to its buckets (pure)."""
    _, _, event_type, stage, events, durations, duration_sum, cost = row
    cost_sum = float(cost) if cost else None
    fields = counter_fields(
        EventType(event_type), stage or None, events, durations, float(duration_sum), cost_sum
    )
    return dict(fields)


def rebuilt_buckets(store: Client, now_ms: int) -> dict[str, BucketIncrement]:
    """Every bucket of the current window, platform and organizations, from raw events."""
    rows = store.query(_SQL, parameters={"start": first_minute(now_ms) * MINUTE_MS}).result_rows
    buckets: dict[str, BucketIncrement] = {}
    for row in rows:
        minute, organization = int(row[0]), row[1]
        for scope in {None, organization or None}:
            key = keys.rolling_counter(scope, minute)
            bucket = buckets.setdefault(
                key, BucketIncrement(minute * MINUTE_MS + BUCKET_TTL_MS, defaultdict(float))
            )
            for name, value in bucket_fields(row).items():
                bucket.fields[name] += value
    return buckets


async def rebuild_if_lost(
    counters: RollingCounters,
    store: Client,
    paused: Callable[[], AbstractAsyncContextManager[None]],
    now_ms: int,
) -> int | None:
    """If the rolling-counter keys were flushed, rebuild the window from raw events with
    ingest ``paused`` (nothing counted and not yet stored), so the rebuilt numbers are exact.
    Returns the number of buckets rebuilt, or None when nothing was lost."""
    if not await counters.lost():
        return None
    async with paused():
        buckets = await asyncio.to_thread(rebuilt_buckets, store, now_ms)
        await counters.replace(buckets)
    return len(buckets)
