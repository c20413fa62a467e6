"""Window-closing state in Redis, shared by ingest (watermarks, late marks) and the closer.

Every change is one Lua script, atomic; the closer's changes are fenced by its lease, so a
closer that lost the lease cannot move the pointers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from voicemon import keys

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

# KEYS: lease, next_hour, next_day, first_day; ARGV: owner, first hour, first day
_INITIALIZE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'NX')
redis.call('SET', KEYS[3], ARGV[3], 'NX')
redis.call('SET', KEYS[4], ARGV[3], 'NX')
return 1
"""

# KEYS: lease, pointer, dirty, dirty_generation; ARGV: owner, new pointer, score, members...
_QUEUE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[i])
  redis.call('HINCRBY', KEYS[4], ARGV[i], 1)
end
return 1
"""

# KEYS: dirty, dirty_generation; ARGV: member, generation seen before computing
_DONE = """
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: lease; ARGV: owner, ttl_ms
_HOLD_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: version; ARGV: now_ms. Versions grow even if Redis lost the counter.
_NEXT_VERSION = """
local version = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') + 1, tonumber(ARGV[1]))
redis.call('SET', KEYS[1], version)
return version
"""


@dataclass(frozen=True, slots=True)
class DirtyWindow:
    member: str
    generation: int

    @property
    def period_type(self) -> str:
        return self.member.partition(":")[0]

    @property
    def start_ms(self) -> int:
        return int(self.member.partition(":")[2])


@dataclass(frozen=True, slots=True)
class Pointers:
    next_hour: int  # every hour before it is closed (or queued to close)
    next_day: int
    first_day: int  # days before it were never closed

    def day_closed(self, day: int) -> bool:
        return self.first_day <= day < self.next_day


def window_member(period_type: str, start_ms: int) -> str:
    return f"{period_type}:{start_ms}"


class WindowState:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._record_written = redis.register_script(_RECORD_WRITTEN)
        self._queue = redis.register_script(_QUEUE)
        self._initialize = redis.register_script(_INITIALIZE)
        self._done = redis.register_script(_DONE)
        self._hold_lease = redis.register_script(_HOLD_LEASE)
        self._next_version = redis.register_script(_NEXT_VERSION)

    # -- ingest side ------------------------------------------------------------------------
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

    # -- closer side ------------------------------------------------------------------------
    async def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        return bool(await self._hold_lease(keys=[keys.CLOSER_LEASE], args=[owner, ttl_ms]))

    async def release_lease(self, owner: str) -> None:
        if await self._redis.get(keys.CLOSER_LEASE) == owner.encode():
            await self._redis.delete(keys.CLOSER_LEASE)

    async def watermarks(self) -> dict[int, int]:
        raw = await self._redis.hgetall(keys.WATERMARKS)
        return {int(partition): int(ms) for partition, ms in raw.items()}

    async def pointers(self) -> Pointers | None:
        """The closer's progress, or None before its first run."""
        values = await self._redis.mget([keys.NEXT_HOUR, keys.NEXT_DAY, keys.FIRST_DAY])
        numbers = [int(value) for value in values if value is not None]
        return Pointers(*numbers) if len(numbers) == 3 else None

    async def initialize(self, owner: str, pointers: Pointers) -> bool:
        """Set the starting pointers (first run only), if ``owner`` holds the lease."""
        keys_ = [keys.CLOSER_LEASE, keys.NEXT_HOUR, keys.NEXT_DAY, keys.FIRST_DAY]
        args: list[str | int] = [owner, pointers.next_hour, pointers.next_day]
        return bool(await self._initialize(keys=keys_, args=args))

    async def queue(
        self, owner: str, pointer_key: str, pointer: int, members: list[str], score: int
    ) -> bool:
        """Move a pointer and queue windows for computing, if ``owner`` holds the lease."""
        keys_ = [keys.CLOSER_LEASE, pointer_key, keys.DIRTY, keys.DIRTY_GENERATION]
        return bool(await self._queue(keys=keys_, args=[owner, pointer, score, *members]))

    async def mark_dirty(self, member: str, score: int) -> None:
        """Queue ``member`` (again); a window already queued keeps its place."""
        if await self._redis.zscore(keys.DIRTY, member) is not None:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(keys.DIRTY, {member: score}, nx=True)
        pipe.hincrby(keys.DIRTY_GENERATION, member, 1)
        await pipe.execute()

    async def dirty(self, up_to_score: int) -> list[DirtyWindow]:
        """Queued windows first marked at or before ``up_to_score``, oldest window first."""
        found = await self._redis.zrangebyscore(keys.DIRTY, "-inf", up_to_score)
        members = [m.decode() if isinstance(m, bytes) else str(m) for m in found]
        if not members:
            return []
        generations = await self._redis.hmget(keys.DIRTY_GENERATION, members)
        windows = [
            DirtyWindow(member, int(generation or 0))
            for member, generation in zip(members, generations, strict=True)
        ]
        return sorted(windows, key=lambda w: (w.period_type != "hourly", w.start_ms))

    async def done(self, window: DirtyWindow) -> bool:
        """Unqueue ``window`` unless it was marked again while being computed."""
        keys_ = [keys.DIRTY, keys.DIRTY_GENERATION]
        return bool(await self._done(keys=keys_, args=[window.member, window.generation]))

    async def next_version(self, now_ms: int) -> int:
        return int(await self._next_version(keys=[keys.SNAPSHOT_VERSION], args=[now_ms]))
