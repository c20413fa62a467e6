"""Dedup and rolling counters in Redis, written atomically once per batch.

One Lua script (``_COUNT_ONCE``, called by ``RollingCounters.count_once`` from
``consumers.ingest.Ingest``) checks that none of the batch's new event ids was taken meanwhile
and, only then, marks them seen and applies the summed counter increments. All of it or
nothing: a crash can never leave an event marked seen but uncounted, which is what makes a
replay after a crash exact. Seen-markers are compact and live 80 to 100 minutes after
arrival (``voicemon.keys``): Redis holds about an hour and a half of them, whatever the
48-hour horizon; older duplicates are caught by the store (``consumers.ingest``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
from redis.asyncio import Redis

from voicemon import keys
from voicemon.rolling import BucketIncrement

# Seen-markers (voicemon.keys). Scripts that read or write many of them take two packed
# arguments (``_packed``): the generations that exist, the current one first, with their shard
# counts (MessagePack), and the events' 16-byte digests end to end. The script names a
# marker's hash as ``voicemon.keys.seen_hash`` does (a test holds them together): the hashes
# of one batch span any number of cluster slots, so ingest needs a standalone Redis (or one
# primary) for its markers, as it always has for its counters.
_MARKERS = """
local generations, digests = cmsgpack.unpack(ARGV[1]), ARGV[2]
local PER_CALL = 1000  -- fields per HMGET / HSET (Lua's unpack has a limit)
local prefixes = {}
for g = 1, #generations do
  prefixes[g] = 'PREFIX:seen:' .. generations[g][1] .. ':'
end
-- Each event's field and hash in the current generation, and per generation the events of
-- each hash: one command reads or writes all of a hash's markers of the batch.
local function grouped(n)
  local fields, current, by_hash = {}, {}, {}
  for g = 1, #generations do by_hash[g] = {} end
  for i = 1, n do
    local at = (i - 1) * 16
    local b1, b2, b3, b4 = string.byte(digests, at + 1, at + 4)
    local slot = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    fields[i] = string.sub(digests, at + 5, at + 16)
    for g = 1, #generations do
      local key = prefixes[g] .. (slot % generations[g][2])
      if g == 1 then current[i] = key end
      local members = by_hash[g][key]
      if members then members[#members + 1] = i else by_hash[g][key] = {i} end
    end
  end
  return fields, current, by_hash
end
-- Per event, the position that counted it (the newest generation's), or ''; whether any
-- did; each event's field; and the events of each hash of the current generation.
local function owners_of(n)
  local fields, current, by_hash = grouped(n)
  local owners, any = {}, false
  for g = 1, #generations do
    for key, members in pairs(by_hash[g]) do
      for first = 1, #members, PER_CALL do
        local last = math.min(first + PER_CALL - 1, #members)
        local wanted = {}
        for j = first, last do wanted[#wanted + 1] = fields[members[j]] end
        local found = redis.call('HMGET', key, unpack(wanted))
        for j = first, last do
          local position, i = found[j - first + 1], members[j]
          if position and not owners[i] then owners[i] = position; any = true end
        end
      end
    end
  end
  for i = 1, n do owners[i] = owners[i] or '' end
  return owners, any, fields, by_hash[1]
end
""".replace("PREFIX", keys.PREFIX)

# Called by RollingCounters.owners. ARGV: the packed generations, the digests. Returns per
# event the position that counted it, or ''.
_OWNERS = (
    _MARKERS
    + """
local owners = owners_of(#digests / 16)
return owners
"""
)

# Adds the packed bucket increments (per bucket: its KEYS index, expiry, then field, value
# pairs) to the counter buckets.
_APPLY_BUCKETS = """
local function apply_buckets(buckets)
  for _, bucket in ipairs(buckets) do
    local key = KEYS[bucket[1]]
    local fields = bucket[3]
    for f = 1, #fields, 2 do
      if string.sub(fields[f], -4) == '_sum' then
        redis.call('HINCRBYFLOAT', key, fields[f], fields[f + 1])
      else
        redis.call('HINCRBY', key, fields[f], fields[f + 1])
      end
    end
    redis.call('PEXPIREAT', key, bucket[2])
  end
end
"""

# Called by RollingCounters.count_once. KEYS: the current generation's count key, the
# counters' epoch and sentinel, then the counter buckets. ARGV: the packed generations, the
# digests, the packed positions, expiry of the current generation's hashes, the packed bucket
# increments. If no event is marked yet, marks each with its position and applies the
# increments, and returns nothing; otherwise writes nothing and returns every event's owner.
_COUNT_ONCE = (
    _MARKERS
    + _APPLY_BUCKETS
    + """
local positions = cmsgpack.unpack(ARGV[3])
local n = #positions
if n > 0 then
  local owners, any, fields, current = owners_of(n)
  if any then return owners end
  for key, members in pairs(current) do
    for first = 1, #members, PER_CALL do
      local marks = {}
      for j = first, math.min(first + PER_CALL - 1, #members) do
        local i = members[j]
        marks[#marks + 1] = fields[i]
        marks[#marks + 1] = positions[i]
      end
      redis.call('HSET', key, unpack(marks))
    end
    redis.call('PEXPIREAT', key, ARGV[4])
  end
  redis.call('INCRBY', KEYS[1], n)
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
end
-- The first counting ever also creates the counters' epoch and sentinel, so that a flush of
-- the counter keys is told from a first start however soon it comes (RollingCounters.lost).
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], '1')
  redis.call('SET', KEYS[3], '1')
end
apply_buckets(cmsgpack.unpack(ARGV[5]))
return {}
"""
)

# Called by RollingCounters.settle. KEYS: one marker's hashes, then buckets. ARGV: field,
# position, settled value, the packed bucket increments (KEYS indexes after the hashes).
# Only if the marker still holds the position: mark it settled and apply the increments.
_SETTLE = (
    _APPLY_BUCKETS
    + """
local buckets = cmsgpack.unpack(ARGV[4])
local m = #KEYS - #buckets
for k = 1, m do
  if redis.call('HGET', KEYS[k], ARGV[1]) == ARGV[2] then
    redis.call('HSET', KEYS[k], ARGV[1], ARGV[3])
    apply_buckets(buckets)
    return 1
  end
end
return 0
"""
)


def packed_buckets(buckets: Mapping[str, BucketIncrement], first_key: int) -> bytes:
    """``_APPLY_BUCKETS``'s argument for ``buckets``, whose keys are KEYS from index
    ``first_key`` in order (pure). Float sums travel as their shortest exact text."""
    packed = []
    for index, bucket in enumerate(buckets.values(), start=first_key):
        fields: list[str | int] = []
        for field, value in bucket.fields.items():
            fields += [field, repr(value) if field.endswith("_sum") else int(value)]
        packed.append((index, bucket.expire_at_ms, fields))
    return msgspec.msgpack.encode(packed)


def _packed(shards: Mapping[int, int], event_ids: Sequence[str]) -> list[bytes]:
    """The generations (current first) with their shard counts, and the events' digests
    (Redis's MessagePack has no binary type, so they travel apart)."""
    digests = b"".join(keys.digest(event_id) for event_id in event_ids)
    return [msgspec.msgpack.encode(list(shards.items())), digests]


class RollingCounters:
    """The Redis side of ingest: seen-marker lookups and the atomic count-once write."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._owners = redis.register_script(_OWNERS)
        self._count_once = redis.register_script(_COUNT_ONCE)
        self._settle = redis.register_script(_SETTLE)
        self._shards: dict[int, int] = {}  # generation -> shard count, once known

    async def shard_counts(self, now_ms: int, *, writing: bool) -> dict[int, int]:
        """Shard count of each generation that has markers, the current one first; with
        ``writing``, the current generation's count is decided if it is not yet (the first
        writer sets it from the previous generation's marker count)."""
        generations = keys.seen_generations(now_ms)
        unknown = [g for g in generations if g not in self._shards]
        if unknown:
            values = await self._redis.mget([keys.seen_shards(g) for g in unknown])
            for generation, value in zip(unknown, values, strict=True):
                if value is not None:
                    self._shards[generation] = int(value)
        current = generations[0]
        if writing and current not in self._shards:
            previous = await self._redis.get(keys.seen_count(current - 1))
            chosen = keys.shards_for(int(previous or 0))
            expire_at = keys.seen_expire_at_ms(now_ms)
            await self._redis.set(keys.seen_shards(current), chosen, nx=True, pxat=expire_at)
            self._shards[current] = int(await self._redis.get(keys.seen_shards(current)) or 0)
        for old in [g for g in self._shards if g < generations[-1]]:
            del self._shards[old]
        return {g: self._shards[g] for g in generations if g in self._shards}

    async def owners(self, event_ids: Sequence[str], now_ms: int) -> list[str | None]:
        """For each event id, the position that counted it within the markers' lifetime, or
        None if none did."""
        shards = await self.shard_counts(now_ms, writing=False)
        if not event_ids or not shards:
            return [None] * len(event_ids)
        owners = await self._owners(keys=[], args=_packed(shards, event_ids))
        return [value.decode() if value else None for value in owners]

    async def count_once(
        self,
        new_events: Sequence[tuple[str, str]],
        buckets: Mapping[str, BucketIncrement],
        now_ms: int,
    ) -> list[str | None] | None:
        """Mark ``new_events`` (event id, position) seen and apply ``buckets``, atomically, if
        none of them is marked yet, and return None. Otherwise write nothing and return the
        position that counted each of them (None: not marked); the caller reclassifies and
        tries again."""
        if not new_events and not buckets:
            return None
        shards = await self.shard_counts(now_ms, writing=True)
        count_key = keys.seen_count(keys.seen_generation(now_ms))
        ids = [event_id for event_id, _ in new_events]
        positions = [position for _, position in new_events]
        taken = await self._count_once(
            keys=[count_key, keys.COUNTERS_EPOCH, keys.COUNTERS_SENTINEL, *buckets],
            args=[
                *_packed(shards, ids),
                msgspec.msgpack.encode(positions),
                keys.seen_expire_at_ms(now_ms),
                packed_buckets(buckets, first_key=4),
            ],
        )
        if not taken:
            return None
        return [value.decode() if value else None for value in taken]

    async def settle(
        self, event_id: str, position: str, decrements: Mapping[str, BucketIncrement], now_ms: int
    ) -> bool:
        """Take back what the event counted at ``position`` (the store refused it), once: its
        marker is marked settled, so a replay neither counts it nor takes it back again."""
        shards = await self.shard_counts(now_ms, writing=False)
        found = keys.marker(event_id)
        hashes = [keys.seen_hash(generation, count, found) for generation, count in shards.items()]
        buckets = packed_buckets(decrements, first_key=len(hashes) + 1)
        args: list[bytes | str] = [found.field, position, keys.SETTLED + position, buckets]
        return bool(await self._settle(keys=hashes + list(decrements), args=args))

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
