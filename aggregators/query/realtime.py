"""The real-time read of CONTRACT §5: one Redis call, never ClickHouse.

A read sums the 60 minute buckets of one scope on the Redis server: each bucket is a sorted
set of counter fields (``voicemon.keys.rolling_counter``) and one ``ZUNION`` adds them up in
C. A scope's buckets share a hash tag, so on a Redis Cluster they sit on one node. The cost
is the same whatever the event volume or the number of organizations.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voicemon import keys
from voicemon.rolling import first_minute, view
from voicemon.windows import MINUTE_MS

if TYPE_CHECKING:  # the client is the caller's: the CLI imports it only when it reads Redis
    from voicemon.redis_client import AsyncRedis
    from voicemon.redis_client import SyncRedis as Redis

# KEYS: a scope's buckets. Returns field, total, field, total, ... (a total as the text that
# reads back as the very double). ZUNION runs in a script for the cluster client's sake: it
# routes a script by its KEYS, but asks a node which keys a bare ZUNION has (a round trip).
_WINDOW_TOTALS = """
local command = {'ZUNION', #KEYS, unpack(KEYS)}
command[#command + 1] = 'WITHSCORES'
return redis.call(unpack(command))
"""

Scope = str | None  # an organization id, or None for the platform
View = dict[str, Any]  # the §5 view (``voicemon.rolling.view``)


def bucket_keys(organization_id: Scope, now_ms: int) -> list[str]:
    last = now_ms // MINUTE_MS
    return [keys.rolling_counter(organization_id, m) for m in range(first_minute(now_ms), last + 1)]


@dataclass(frozen=True, slots=True)
class _Read:
    """One real-time read of a scope at an instant: which buckets to sum, and the view
    computed from the totals (pure; the readers below only do the I/O)."""

    organization_id: Scope
    stages: Sequence[str]
    now_ms: int

    @classmethod
    def at(cls, organization_id: Scope, stages: Sequence[str], now_ms: int | None) -> _Read:
        return cls(organization_id, stages, int(time.time() * 1000) if now_ms is None else now_ms)

    @property
    def keys(self) -> list[str]:
        return bucket_keys(self.organization_id, self.now_ms)

    def view(self, reply: list[bytes]) -> View:
        """The view from ``_WINDOW_TOTALS``' reply: field, window total, field, ..."""
        pairs = zip(reply[::2], reply[1::2], strict=True)
        found = {name.decode(): float(total) for name, total in pairs}
        scope, now_ms, stages = self.organization_id, self.now_ms, self.stages
        return view(found, organization_id=scope, now_ms=now_ms, stages=stages)


def read_realtime(
    redis: Redis, organization_id: Scope, stages: Sequence[str], now_ms: int | None = None
) -> View:
    """The real-time view of one scope, on a blocking client (the CLI's)."""
    read = _Read.at(organization_id, stages, now_ms)
    return read.view(redis.register_script(_WINDOW_TOTALS)(keys=read.keys))


async def read_realtime_async(
    redis: AsyncRedis, organization_id: Scope, stages: Sequence[str], now_ms: int | None = None
) -> View:
    """The real-time view of one scope, on an asyncio client (the API's)."""
    read = _Read.at(organization_id, stages, now_ms)
    return read.view(await redis.register_script(_WINDOW_TOTALS)(keys=read.keys))
