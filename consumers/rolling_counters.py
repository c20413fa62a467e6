"""Dedup and rolling counters in Redis, written atomically once per batch.

One Lua script (``_COUNT_ONCE``, called by ``RollingCounters.count_once`` from
``consumers.ingest.Ingest``) checks that none of the batch's new event ids was taken meanwhile
and, only then, marks them seen and applies the summed counter increments. All of it or
nothing: a crash can never leave an event marked seen but uncounted, which is what makes a
replay after a crash exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from voicemon import keys
from voicemon.rolling import BucketIncrement

DEDUP_SLACK_MS = 10 * 60_000
# KEYS: n seen-markers, then counter buckets.
# ARGV: n, then per seen-marker (position, pxat), per bucket (pexpireat, field count,
#       field, value, ...).
_COUNT_ONCE = """
local n = tonumber(ARGV[1])
local taken = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then taken[#taken + 1] = i - 1 end
end
if #taken > 0 then return taken end
local a = 2
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[a], 'PXAT', ARGV[a + 1])
  a = a + 2
end
for k = n + 1, #KEYS do
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

    async def count_once(
        self,
        new_events: Sequence[NewEvent],
        buckets: Mapping[str, BucketIncrement],
    ) -> list[int]:
        """Apply everything atomically; return indexes of ``new_events`` already taken
        (then nothing was written and the caller must reclassify and retry)."""
        if not new_events and not buckets:
            return []
        keys: list[str] = [event.seen_key for event in new_events]
        args: list[str | int] = [len(new_events)]
        for event in new_events:
            args += [event.position, event.expire_at_ms]
        for key, bucket in buckets.items():
            keys.append(key)
            args += [bucket.expire_at_ms, len(bucket.fields)]
            for field, value in bucket.fields.items():
                args += [field, repr(value) if field.endswith("_sum") else int(value)]
        taken = await self._count_once(keys=keys, args=args)
        return [int(index) for index in taken]

    async def lost(self) -> bool:
        """True when the rolling-counter keys were flushed: their sentinel is gone but the
        counters' epoch (a key outside them) says they existed. On a first start both are
        absent and the sentinel is simply set."""
        sentinel, epoch = await self._redis.mget([keys.COUNTERS_SENTINEL, keys.COUNTERS_EPOCH])
        if sentinel is not None:
            return False
        if epoch is None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(keys.COUNTERS_EPOCH, "1")
            pipe.set(keys.COUNTERS_SENTINEL, "1")
            await pipe.execute()
            return False
        return True

    async def replace(self, buckets: Mapping[str, BucketIncrement]) -> None:
        """Overwrite the window's buckets with ``buckets`` (a rebuild) in one transaction."""
        pipe = self._redis.pipeline(transaction=True)
        for key, bucket in buckets.items():
            pipe.delete(key)
            pipe.hset(key, mapping={k: repr(v) if k.endswith("_sum") else int(v)
                                    for k, v in bucket.fields.items()})  # fmt: skip
            pipe.pexpireat(key, bucket.expire_at_ms)
        pipe.set(keys.COUNTERS_SENTINEL, "1")
        await pipe.execute()
