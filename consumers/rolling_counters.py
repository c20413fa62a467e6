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

from voicemon import keys
from voicemon.rolling import BucketIncrement

DEDUP_SLACK_MS = 10 * 60_000
DLQ_ABANDONED_MS = 10_000  # a claim this old, not marked sent, may be taken over
DLQ_MARKER_TTL_MS = 48 * 3_600_000

# A rejection is published by exactly one worker. Its marker holds the claim
# "claimant|claimed_at_ms|dlq_partition|dlq_offset" until Kafka acknowledged the record, then
# "sent". A claim that is this worker's own (a retried batch) or abandoned (older than
# DLQ_ABANDONED_MS: its worker died or lost the partition) is returned to the caller, which
# reads the DLQ partition from the claim's offset to learn whether it was published, and
# then either marks it sent or takes it over (compare-and-set).
# KEYS: dlq markers; ARGV: claimant, now_ms, abandoned_after_ms, ttl_ms, claim per key...
_CLAIM_DEAD_LETTERS = """
local verdicts = {}
local own = ARGV[1] .. '|'
for i = 1, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder == 'sent' then
    verdicts[i] = 'sent'
  elseif holder == false then
    redis.call('SET', KEYS[i], ARGV[4 + i], 'PX', ARGV[4])
    verdicts[i] = 'claimed'
  else
    local claimed_at = tonumber(string.match(holder, '^[^|]*|(%d+)|') or '0')
    if string.sub(holder, 1, #own) == own or tonumber(ARGV[2]) - claimed_at > tonumber(ARGV[3]) then
      verdicts[i] = holder
    else
      verdicts[i] = 'held'
    end
  end
end
return verdicts
"""

# KEYS: a dlq marker; ARGV: the claim expected, the new claim, ttl_ms
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A DLQ claim: who claimed, when, and where the DLQ partition ended at that moment."""

    claimant: str
    claimed_at_ms: int
    dlq_partition: int
    dlq_offset: int

    def __str__(self) -> str:
        return f"{self.claimant}|{self.claimed_at_ms}|{self.dlq_partition}|{self.dlq_offset}"

    @classmethod
    def parse(cls, text: str) -> Claim:
        claimant, at, partition, offset = text.rsplit("|", 3)
        return cls(claimant, int(at), int(partition), int(offset))


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
        self._claim = redis.register_script(_CLAIM_DEAD_LETTERS)
        self._take_over = redis.register_script(_TAKE_OVER)

    async def first_positions(self, seen_keys: Sequence[str]) -> list[str | None]:
        """For each event id, the position that counted it, or None if never counted."""
        if not seen_keys:
            return []
        values = await self._redis.mget(seen_keys)
        return [value.decode() if isinstance(value, bytes) else value for value in values]

    async def claim_dead_letters(
        self, claims: Mapping[str, Claim], now_ms: int
    ) -> dict[str, str | Claim]:
        """For each rejection marker: 'sent', 'claimed' (ours to send now), 'held' (another
        worker is publishing it: wait), or the earlier Claim to verify before taking over."""
        if not claims:
            return {}
        claimant = next(iter(claims.values())).claimant
        args: list[str | int] = [claimant, now_ms, DLQ_ABANDONED_MS, DLQ_MARKER_TTL_MS]
        args += [str(claim) for claim in claims.values()]
        verdicts = await self._claim(keys=list(claims), args=args)
        result: dict[str, str | Claim] = {}
        for key, raw in zip(claims, verdicts, strict=True):
            verdict = raw.decode() if isinstance(raw, bytes) else str(raw)
            result[key] = (
                verdict if verdict in ("sent", "claimed", "held") else Claim.parse(verdict)
            )
        return result

    async def take_over(self, key: str, earlier: Claim, claim: Claim) -> bool:
        args: list[str | int] = [str(earlier), str(claim), DLQ_MARKER_TTL_MS]
        return bool(await self._take_over(keys=[key], args=args))

    async def mark_dead_lettered(self, dlq_keys: Sequence[str], expire_at_ms: int) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for key in dlq_keys:
            pipe.set(key, "sent", pxat=expire_at_ms)
        await pipe.execute()

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
