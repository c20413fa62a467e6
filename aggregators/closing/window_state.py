"""The window closer's state in Redis: its lease, pointers, queue of windows to compute and
snapshot records not yet acknowledged by the broker.

Every change is one Lua script, atomic, fenced by the closer's lease, so a closer that lost
the lease cannot move the pointers. Ingest's side of the same keys (watermarks, late hours
queued again) is ``consumers.store_progress``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from voicemon import keys
from voicemon.redis_client import AsyncRedis as Redis

# Snapshot records written to the store (or about to be) and not yet acknowledged by the
# broker: member -> "<version> <generation> <records JSON>" (``Unpublished.encode``).
# Beside the other closer keys (one cluster slot); its name belongs in voicemon/keys.py.
UNPUBLISHED = f"{keys.CLOSER}:unpublished"

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

# KEYS: lease, unpublished; ARGV: owner ('' for any), member, entry (Unpublished.encode)
_HOLD_UNPUBLISHED = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: unpublished, dirty, dirty_generation, next_day, first_day
# ARGV: member, version, generation (-1: not queued), day member ('' for none), day ms, score
# Called by WindowCloser.published once the broker acknowledged every record of the entry:
# forget the entry (unless a newer version replaced it), unqueue the window (unless it was
# marked again), and queue its day again if that day is closed — all in one step, so that a
# closer dying around it neither loses the day's re-emission nor publishes the hour twice.
_PUBLISHED = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and string.match(entry, '^(%d+) ') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if tonumber(ARGV[3]) >= 0 and
   tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') == tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
if ARGV[4] ~= '' then
  local day = tonumber(ARGV[5])
  local next_day = tonumber(redis.call('GET', KEYS[4]) or '-1')
  local first_day = tonumber(redis.call('GET', KEYS[5]) or '-1')
  if first_day <= day and day < next_day and redis.call('ZSCORE', KEYS[2], ARGV[4]) == false then
    redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[4])
    redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  end
end
return 1
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
class Unpublished:
    """A window's snapshot records that the store holds (or is about to) and the broker has
    not acknowledged yet; ``generation`` is the window's queue generation when it was
    computed (-1: not computed from the queue, e.g. by replay)."""

    member: str
    generation: int
    version: int
    records: tuple[tuple[bytes, bytes], ...]

    def encode(self) -> bytes:
        """``<version> <generation> <records as JSON>`` (the scripts read the version)."""
        records = orjson.dumps([[key.decode(), value.decode()] for key, value in self.records])
        return f"{self.version} {self.generation} ".encode() + records

    @classmethod
    def decode(cls, member: str, data: bytes) -> Unpublished:
        version, generation, records = data.split(b" ", 2)
        pairs = tuple((key.encode(), value.encode()) for key, value in orjson.loads(records))
        return cls(member, int(generation), int(version), pairs)


@dataclass(frozen=True, slots=True)
class Pointers:
    next_hour: int  # every hour before it is closed (or queued to close)
    next_day: int
    first_day: int  # days before it were never closed

    def day_closed(self, day: int) -> bool:
        return self.first_day <= day < self.next_day


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def window_member(period_type: str, start_ms: int) -> str:
    return f"{period_type}:{start_ms}"


class WindowState:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue = redis.register_script(_QUEUE)
        self._initialize = redis.register_script(_INITIALIZE)
        self._done = redis.register_script(_DONE)
        self._hold_lease = redis.register_script(_HOLD_LEASE)
        self._next_version = redis.register_script(_NEXT_VERSION)
        self._hold_unpublished = redis.register_script(_HOLD_UNPUBLISHED)
        self._published = redis.register_script(_PUBLISHED)

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

    async def hold_unpublished(self, owner: str, entry: Unpublished) -> bool:
        """Keep ``entry`` until its records are acknowledged (replacing an older entry of the
        same window), if ``owner`` holds the lease ('' for anyone). Called before the rows
        are written."""
        keys_ = [keys.CLOSER_LEASE, UNPUBLISHED]
        return bool(
            await self._hold_unpublished(keys=keys_, args=[owner, entry.member, entry.encode()])
        )

    async def unpublished(self) -> list[Unpublished]:
        """Every entry kept by ``hold_unpublished`` and not yet ``published``, oldest
        window first (hours before days)."""
        raw = await self._redis.hgetall(UNPUBLISHED)
        entries = [
            Unpublished.decode(_text(member), data if isinstance(data, bytes) else data.encode())
            for member, data in raw.items()
        ]
        return sorted(entries, key=lambda e: (not e.member.startswith("hourly"), e.member))

    async def published(
        self, entry: Unpublished, day: tuple[str, int] = ("", 0), score: int = 0
    ) -> None:
        """The broker acknowledged every record of ``entry``: forget it, unqueue its window
        unless marked again, and queue ``day`` (member, start ms) again if it is closed."""
        keys_ = [UNPUBLISHED, keys.DIRTY, keys.DIRTY_GENERATION, keys.NEXT_DAY, keys.FIRST_DAY]
        args: list[str | int] = [
            entry.member, entry.version, entry.generation, day[0], day[1], score
        ]  # fmt: skip
        await self._published(keys=keys_, args=args)
