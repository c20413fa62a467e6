"""The real-time read of CONTRACT §5: one Redis round trip, never ClickHouse.

A read fetches the 60 minute buckets of one scope in one pipeline, so its cost is the
same whatever the event volume or the number of organizations.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

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


P = TypeVar("P", bound=_Pipeline)
Scope = str | None  # an organization id, or None for the platform
View = dict[str, Any]  # the §5 view (``voicemon.rolling.summarize``)


@dataclass(frozen=True, slots=True)
class _Read:
    """One real-time read of a scope at an instant: which buckets to fetch, and the view
    computed from Redis's replies (pure; the readers below only do the I/O)."""

    organization_id: Scope
    stages: Sequence[str]
    now_ms: int

    @classmethod
    def at(cls, organization_id: Scope, stages: Sequence[str], now_ms: int | None) -> _Read:
        return cls(organization_id, stages, int(time.time() * 1000) if now_ms is None else now_ms)

    def queued(self, pipe: P) -> P:
        for key in bucket_keys(self.organization_id, self.now_ms):
            pipe.hgetall(key)
        return pipe

    def view(self, replies: list[Any]) -> View:
        scope, now_ms, stages = self.organization_id, self.now_ms, self.stages
        return summarize(replies, organization_id=scope, now_ms=now_ms, stages=stages)


def read_realtime(
    redis: Redis, organization_id: Scope, stages: Sequence[str], now_ms: int | None = None
) -> View:
    """The real-time view of one scope, on a blocking client (the CLI's)."""
    read = _Read.at(organization_id, stages, now_ms)
    return read.view(read.queued(redis.pipeline(transaction=False)).execute())


async def read_realtime_async(
    redis: AsyncRedis, organization_id: Scope, stages: Sequence[str], now_ms: int | None = None
) -> View:
    """The real-time view of one scope, on an asyncio client (the API's)."""
    read = _Read.at(organization_id, stages, now_ms)
    return read.view(await read.queued(redis.pipeline(transaction=False)).execute())
