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

from redis.asyncio import Redis

from voicemon import keys
from voicemon.rolling import BucketIncrement

# Seen-markers (voicemon.keys): each event is looked up in the hash of its shard in each of
# the m generations that exist; ARGV carries, per event, its digest field and the indexes in
# KEYS of its m hashes, the current generation's first.

# Adds the bucket increments of ARGV from index a to the buckets KEYS[first..].
_APPLY_BUCKETS = """
local function apply_buckets(first, a)
  for k = first, #KEYS do
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
end
"""

# Called by RollingCounters.owners. ARGV: m, then per event (field, m key indexes).
# Returns per event the position that counted it, or ''.
_OWNERS = """
local m = tonumber(ARGV[1])
local owners = {}
local a = 2
while a <= #ARGV do
  local found = ''
  for k = 1, m do
    local position = redis.call('HGET', KEYS[tonumber(ARGV[a + k])], ARGV[a])
    if position then found = position; break end
  end
  owners[#owners + 1] = found
  a = a + 1 + m
end
return owners
"""

# Called by RollingCounters.count_once. KEYS: marker hashes, the generation's count key, the
# counters' epoch and sentinel, then counter buckets. ARGV: m, n, expiry of the current
# generation, index of the count key, per event (field, position, m key indexes), then the
# bucket increments. Returns the indexes of events marked meanwhile (nothing is written).
_COUNT_ONCE = (
    _APPLY_BUCKETS
    + """
local m = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local taken = {}
local a = 5
for i = 1, n do
  for k = 1, m do
    if redis.call('HEXISTS', KEYS[tonumber(ARGV[a + 1 + k])], ARGV[a]) == 1 then
      taken[#taken + 1] = i - 1
      break
    end
  end
  a = a + 2 + m
end
if #taken > 0 then return taken end
local expiring = {}
a = 5
for i = 1, n do
  local key = KEYS[tonumber(ARGV[a + 2])]
  redis.call('HSET', key, ARGV[a], ARGV[a + 1])
  expiring[key] = true
  a = a + 2 + m
end
for key in pairs(expiring) do redis.call('PEXPIREAT', key, ARGV[3]) end
local count_key = KEYS[tonumber(ARGV[4])]
redis.call('INCRBY', count_key, n)
redis.call('PEXPIREAT', count_key, ARGV[3])
-- The first counting ever also creates the counters' epoch and sentinel, so that a flush of
-- the counter keys is told from a first start however soon it comes (RollingCounters.lost).
if redis.call('EXISTS', KEYS[tonumber(ARGV[4]) + 1]) == 0 then
  redis.call('SET', KEYS[tonumber(ARGV[4]) + 1], '1')
  redis.call('SET', KEYS[tonumber(ARGV[4]) + 2], '1')
end
apply_buckets(tonumber(ARGV[4]) + 3, a)
return taken
"""
)

# Called by RollingCounters.settle. KEYS: one marker's m hashes, then buckets. ARGV: m,
# field, position, settled value, then the bucket increments. Only if the marker still holds
# the position: mark it settled and apply the increments.
_SETTLE = (
    _APPLY_BUCKETS
    + """
local m = tonumber(ARGV[1])
for k = 1, m do
  if redis.call('HGET', KEYS[k], ARGV[2]) == ARGV[3] then
    redis.call('HSET', KEYS[k], ARGV[2], ARGV[4])
    apply_buckets(m + 1, 5)
    return 1
  end
end
return 0
"""
)
SETTLED = "unstorable@"  # a settled marker's value: this prefix and the position


def bucket_args(buckets: Mapping[str, BucketIncrement]) -> list[bytes | str | int]:
    """The ARGV tail of ``_APPLY_BUCKETS`` for ``buckets`` (pure)."""
    args: list[bytes | str | int] = []
    for bucket in buckets.values():
        args += [bucket.expire_at_ms, len(bucket.fields)]
        for field, value in bucket.fields.items():
            args += [field, repr(value) if field.endswith("_sum") else int(value)]
    return args


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
        markers = [keys.marker(event_id) for event_id in event_ids]
        hashes, indexes = keys.seen_hash_keys(markers, shards)
        args: list[bytes | int] = [len(shards)]
        for found, where in zip(markers, indexes, strict=True):
            args += [found.field, *where]
        owners = await self._owners(keys=hashes, args=args)
        return [value.decode() if value else None for value in owners]

    async def count_once(
        self,
        new_events: Sequence[tuple[str, str]],
        buckets: Mapping[str, BucketIncrement],
        now_ms: int,
    ) -> list[int]:
        """Mark ``new_events`` (event id, position) seen and apply ``buckets`` atomically;
        return the indexes of events another worker marked meanwhile (then nothing was
        written and the caller must reclassify and retry)."""
        if not new_events and not buckets:
            return []
        shards = await self.shard_counts(now_ms, writing=True)
        markers = [keys.marker(event_id) for event_id, _ in new_events]
        hashes, indexes = keys.seen_hash_keys(markers, shards)
        count_key = keys.seen_count(keys.seen_generation(now_ms))
        args: list[bytes | str | int] = [
            len(shards),
            len(new_events),
            keys.seen_expire_at_ms(now_ms),
            len(hashes) + 1,
        ]
        for found, (_, position), where in zip(markers, new_events, indexes, strict=True):
            args += [found.field, position, *where]
        all_keys = [*hashes, count_key, keys.COUNTERS_EPOCH, keys.COUNTERS_SENTINEL, *buckets]
        taken = await self._count_once(keys=all_keys, args=args + bucket_args(buckets))
        return [int(index) for index in taken]

    async def settle(
        self, event_id: str, position: str, decrements: Mapping[str, BucketIncrement], now_ms: int
    ) -> bool:
        """Take back what the event counted at ``position`` (the store refused it), once: its
        marker is marked settled, so a replay neither counts it nor takes it back again."""
        shards = await self.shard_counts(now_ms, writing=False)
        found = keys.marker(event_id)
        hashes, _ = keys.seen_hash_keys([found], shards)
        args: list[bytes | str | int] = [len(hashes), found.field, position, SETTLED + position]
        return bool(await self._settle(keys=hashes + list(decrements),
                                       args=args + bucket_args(decrements)))  # fmt: skip

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
