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

# Seen-markers are grouped: KEYS holds, for each distinct shard of the batch, the
# keys.SEEN_GENERATIONS hashes of that shard, the current generation first.

# Called by RollingCounters.owners. KEYS: the groups. ARGV: generations per group, then per
# event (group index, digest field). Returns per event the position that counted it, or ''.
_OWNERS = """
local g = tonumber(ARGV[1])
local owners = {}
local a = 2
for i = 1, (#ARGV - 1) / 2 do
  local base = tonumber(ARGV[a]) * g
  local found = ''
  for k = 1, g do
    local position = redis.call('HGET', KEYS[base + k], ARGV[a + 1])
    if position then found = position; break end
  end
  owners[i] = found
  a = a + 2
end
return owners
"""

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

# Called by RollingCounters.count_once. KEYS: the groups, then counter buckets.
# ARGV: generations per group, group count, expiry of the current generation, n, per event
# (group index, digest field, position), per bucket (pexpireat, field count, field, value...).
_COUNT_ONCE = (
    _APPLY_BUCKETS
    + """
local g = tonumber(ARGV[1])
local groups = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local taken = {}
local a = 5
for i = 1, n do
  local base = tonumber(ARGV[a]) * g
  for k = 1, g do
    if redis.call('HEXISTS', KEYS[base + k], ARGV[a + 1]) == 1 then
      taken[#taken + 1] = i - 1
      break
    end
  end
  a = a + 3
end
if #taken > 0 then return taken end
a = 5
for i = 1, n do
  redis.call('HSET', KEYS[tonumber(ARGV[a]) * g + 1], ARGV[a + 1], ARGV[a + 2])
  a = a + 3
end
for group = 0, groups - 1 do
  redis.call('PEXPIREAT', KEYS[group * g + 1], ARGV[3])
end
apply_buckets(groups * g + 1, a)
return taken
"""
)

# Called by RollingCounters.settle. KEYS: the hashes of one marker's shard, then buckets.
# ARGV: generations, digest field, position, settled value, then the bucket increments.
# Only if the marker still holds the position: mark it settled and apply the increments.
_SETTLE = (
    _APPLY_BUCKETS
    + """
local g = tonumber(ARGV[1])
for k = 1, g do
  if redis.call('HGET', KEYS[k], ARGV[2]) == ARGV[3] then
    redis.call('HSET', KEYS[k], ARGV[2], ARGV[4])
    apply_buckets(g + 1, 5)
    return 1
  end
end
return 0
"""
)
SETTLED = "unstorable@"  # a settled marker's value: this prefix and the position


def marker_groups(markers: Sequence[keys.Marker], now_ms: int) -> tuple[list[str], list[int]]:
    """The KEYS of the markers' hash groups, and each marker's group index (pure)."""
    index: dict[int, int] = {}
    hashes: list[str] = []
    for shard in (m.shard for m in markers):
        if shard not in index:
            index[shard] = len(index)
            hashes += keys.seen_hashes(shard, now_ms)
    return hashes, [index[m.shard] for m in markers]


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

    async def owners(self, event_ids: Sequence[str], now_ms: int) -> list[str | None]:
        """For each event id, the position that counted it within the markers' lifetime, or
        None if none did."""
        if not event_ids:
            return []
        markers = [keys.marker(event_id) for event_id in event_ids]
        hashes, groups = marker_groups(markers, now_ms)
        args: list[bytes | int] = [keys.SEEN_GENERATIONS]
        for group, found in zip(groups, markers, strict=True):
            args += [group, found.field]
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
        markers = [keys.marker(event_id) for event_id, _ in new_events]
        hashes, groups = marker_groups(markers, now_ms)
        group_count = len(hashes) // keys.SEEN_GENERATIONS
        args: list[bytes | str | int] = [
            keys.SEEN_GENERATIONS,
            group_count,
            keys.seen_expire_at_ms(now_ms),
            len(new_events),
        ]
        for group, found, (_, position) in zip(groups, markers, new_events, strict=True):
            args += [group, found.field, position]
        taken = await self._count_once(
            keys=hashes + list(buckets), args=args + bucket_args(buckets)
        )
        return [int(index) for index in taken]

    async def settle(
        self, event_id: str, position: str, decrements: Mapping[str, BucketIncrement], now_ms: int
    ) -> bool:
        """Take back what the event counted at ``position`` (the store refused it), once: its
        marker is marked settled, so a replay neither counts it nor takes it back again."""
        found = keys.marker(event_id)
        hashes = keys.seen_hashes(found.shard, now_ms)
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
