"""The real-time read of CONTRACT §5: one Redis round trip, never ClickHouse.

A read fetches the 60 minute buckets of one scope in one pipeline, so its cost is the
same whatever the event volume or the number of organizations.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from voicemon import keys
from voicemon.redis_client import AsyncRedis
from voicemon.redis_client import SyncRedis as Redis
from voicemon.rolling import first_minute, summarize
from voicemon.windows import MINUTE_MS


def bucket_keys(organization_id: str | None, now_ms: int) -> list[str]:
    last = now_ms // MINUTE_MS
    return [keys.rolling_counter(organization_id, m) for m in range(first_minute(now_ms), last + 1)]


class _Pipeline(Protocol):
    def hgetall(self, name: str) -> object: ...


def _queue_reads(pipe: _Pipeline, organization_id: str | None, now_ms: int | None) -> int:
    """Queue the window's bucket reads on ``pipe``; returns the instant read (pure but for
    the clock when ``now_ms`` is None)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    for key in bucket_keys(organization_id, now_ms):
        pipe.hgetall(key)
    return now_ms


def read_realtime(
    redis: Redis,
    organization_id: str | None,
    stages: Sequence[str],
    now_ms: int | None = None,
) -> dict[str, Any]:
    """The real-time view of one scope (the CLI's): the Redis I/O of ``summarize``."""
    pipe = redis.pipeline(transaction=False)
    now_ms = _queue_reads(pipe, organization_id, now_ms)
    return summarize(pipe.execute(), organization_id=organization_id, now_ms=now_ms, stages=stages)


async def read_realtime_async(
    redis: AsyncRedis,
    organization_id: str | None,
    stages: Sequence[str],
    now_ms: int | None = None,
) -> dict[str, Any]:
    """``read_realtime`` on an asyncio client (the API's)."""
    pipe = redis.pipeline(transaction=False)
    now_ms = _queue_reads(pipe, organization_id, now_ms)
    buckets = await pipe.execute()
    return summarize(buckets, organization_id=organization_id, now_ms=now_ms, stages=stages)
