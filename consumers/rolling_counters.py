"""Dedup and rolling counters in Redis, written atomically once per batch.

One Lua script checks that none of the batch's new event ids was taken meanwhile and, only
then, marks them seen, marks the batch's rejections as dead-lettered and applies the summed
counter increments. All of it or nothing: a crash can never leave an event marked seen but
uncounted, which is what makes a replay after a crash exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from voicemon.rolling import BucketIncrement

DEDUP_SLACK_MS = 10 * 60_000

# KEYS: n seen-markers, m dlq-markers, then counter buckets.
# ARGV: n, m, then per seen-marker (position, pxat), per dlq-marker (pxat),
#       per bucket (pexpireat, field count, field, value, ...).
_COUNT_ONCE = """
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local taken = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then taken[#taken + 1] = i - 1 end
end
if #taken > 0 then return taken end
local a = 3
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[a], 'PXAT', ARGV[a + 1])
  a = a + 2
end
for j = n + 1, n + m do
  redis.call('SET', KEYS[j], '1', 'PXAT', ARGV[a])
  a = a + 1
end
for k = n + m + 1, #KEYS do
  local expire_at = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, count do
    local field = ARGV[a]
    if string.sub(field, -4) == '_sum' then
      redis.call('HINCRBYFLOAT', KEYS[k], field, ARGV[a + 1])
    else
      redis.call('HINCRBY', KEYS[k], field, ARGV[a + 1])
    end
    a = a + 2
  end
  redis.call('PEXPIREAT', KEYS[k], expire_at)
end
return taken
"""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be counted: its seen-marker key, position and marker expiry."""

    seen_key: str
    position: str
    expire_at_ms: int


class RollingCounters:
    """The Redis side of ingest: dedup lookups and the atomic count-once write."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._count_once = redis.register_script(_COUNT_ONCE)

    async def first_positions(self, seen_keys: Sequence[str]) -> list[str | None]:
        """For each event id, the position that counted it, or None if never counted."""
        if not seen_keys:
            return []
        values = await self._redis.mget(seen_keys)
        return [value.decode() if isinstance(value, bytes) else value for value in values]

    async def already_dead_lettered(self, dlq_keys: Sequence[str]) -> list[bool]:
        if not dlq_keys:
            return []
        return [value is not None for value in await self._redis.mget(dlq_keys)]

    async def count_once(
        self,
        new_events: Sequence[NewEvent],
        dlq_markers: Mapping[str, int],
        buckets: Mapping[str, BucketIncrement],
    ) -> list[int]:
        """Apply everything atomically; return indexes of ``new_events`` already taken
        (then nothing was written and the caller must reclassify and retry)."""
        if not new_events and not dlq_markers and not buckets:
            return []
        keys: list[str] = [event.seen_key for event in new_events]
        args: list[str | int] = [len(new_events), len(dlq_markers)]
        for event in new_events:
            args += [event.position, event.expire_at_ms]
        keys += dlq_markers.keys()
        args += dlq_markers.values()
        for key, bucket in buckets.items():
            keys.append(key)
            args += [bucket.expire_at_ms, len(bucket.fields)]
            for field, value in bucket.fields.items():
                args += [field, repr(value) if field.endswith("_sum") else int(value)]
        taken = await self._count_once(keys=keys, args=args)
        return [int(index) for index in taken]
