"""Step 5 of ingest: what the store now holds, told to the window closer (CONTRACT §6).

Once a chunk's rows are written, each partition's watermark (the newest ``occurred_at``
written there) rises, and an hour the closer already closed that got events is queued for
it again (those events are late). One Lua script, atomic; the closer's side of the same keys
is ``aggregators.closing.window_state``.
"""

from __future__ import annotations

from collections.abc import Mapping

from voicemon import keys
from voicemon.redis_client import AsyncRedis as Redis

# KEYS: watermarks, next_hour, dirty, dirty_generation
# ARGV: now_ms, partition count, (partition, newest_ms)..., (hour_ms, events)...
_RECORD_WRITTEN = """
local n = tonumber(ARGV[2])
local a = 3
for _ = 1, n do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[a]) or '-1')
  if tonumber(ARGV[a + 1]) > current then redis.call('HSET', KEYS[1], ARGV[a], ARGV[a + 1]) end
  a = a + 2
end
local next_hour = redis.call('GET', KEYS[2])
local late = 0
if next_hour then
  next_hour = tonumber(next_hour)
  while a <= #ARGV do
    if tonumber(ARGV[a]) < next_hour then
      local member = 'hourly:' .. ARGV[a]
      redis.call('ZADD', KEYS[3], 'NX', ARGV[1], member)
      redis.call('HINCRBY', KEYS[4], member, 1)
      late = late + tonumber(ARGV[a + 1])
    end
    a = a + 2
  end
end
return late
"""


class StoreProgress:
    """How far the store has got in each partition, and the closed hours it got rows of."""

    def __init__(self, redis: Redis) -> None:
        self._record_written = redis.register_script(_RECORD_WRITTEN)

    async def record_written(
        self, newest_by_partition: Mapping[int, int], events_by_hour: Mapping[int, int], now_ms: int
    ) -> int:
        """Raise the partitions' watermarks; mark closed hours that got events as dirty.
        Returns how many of the events were late."""
        args: list[int] = [now_ms, len(newest_by_partition)]
        for partition, newest in newest_by_partition.items():
            args += [partition, newest]
        for hour, count in events_by_hour.items():
            args += [hour, count]
        keys_ = [keys.WATERMARKS, keys.NEXT_HOUR, keys.DIRTY, keys.DIRTY_GENERATION]
        return int(await self._record_written(keys=keys_, args=args))
