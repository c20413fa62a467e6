"""Dedup and rolling counters in Redis: each event counted exactly once, on one Redis primary
or on a Redis Cluster (every script call touches one hash slot).

A batch is counted in two steps, each a set of script calls pipelined in one round trip per
Redis node, called by ``consumers.ingest.Ingest._count_once``:

1. ``RollingCounters.claim`` (``_CLAIM``, one call per shard group ``keys.SEEN_GROUPS`` of the
   batch's new events): if none of the group's event ids is marked seen yet, marks each with
   the position (partition:offset:index) that counts it; otherwise writes nothing and says
   who counted them. All of a group or nothing.
2. ``RollingCounters.add`` (``_ADD``, one call per counter scope's hash tag: the platform's
   ``{p}`` and each organization's): adds the increments of the events the batch's
   positions own (claimed now, or found marked with their own position by an earlier
   attempt), per input partition only if the scope's applied offset (``keys.applied``) lies
   before the batch's offsets there, and moves that offset to the batch's last offset in the
   same script.

Why a crash can never leave an event marked seen but uncounted:
- The count step precedes the ack (``consumers.ingest_agent``), so an event marked but whose
  increments did not reach every scope (a crash, an outage or a failover between the calls)
  has an uncommitted offset and is consumed again. Its replay finds the marker holding its
  own position, owns the event again and adds its increments to every scope whose applied
  offset lies before it: exactly the scopes that missed them.
- No scope adds an event's increments twice: its applied offset moves past the event in the
  very script that adds them; a later call covering that offset skips the partition, and a
  call covering only part of what remains is redone with the events after it.
- This rests on counting each input partition in offset order: a worker counts its chunks
  one after the other (``Overlap``), and a worker taking over a partition starts at the
  committed offset, behind whatever was counted but not acked. Two workers counting the
  same chunk at once (a handover) own the same events (a marker is set once, by the first
  claim) and add them once (the applied offset).
- After a Redis failover the new primary holds a prefix of the old one's writes (Redis
  replicates in order; ``voicemon.redis_client.Replication`` makes a batch wait for
  replicas before its offsets commit): any prefix of claims and adds is one of the states
  above.
Seen-markers live 80 to 100 minutes after arrival (``voicemon.keys``); the applied offsets
outlive them (``APPLIED_TTL_MS``). Older duplicates are caught by the store
(``consumers.ingest``). Limit: offsets that start again from 0 (the events topic recreated)
within that time need voicemon's Redis keys flushed, as the DLQ markers already do.

The platform's call also raises a decided mark per input partition (``keys.decided``: the
offset and log-append time of the chunk's last message, kept ``DECIDED_TTL_MS``), rows or
not, and returns the marks as they were: a duplicate is counted in
``voicemon_events_duplicate_total`` by the count that first decides its position, and a
message too late by the worker's clock keeps the decision made while it was in time
(``consumers.ingest.Ingest._decided_before``). A lower offset appended later than the mark
is of a recreated topic: not decided.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from consumers.rows import RawRow
from voicemon import keys, rolling
from voicemon.event import RAW_RETENTION_MS
from voicemon.redis_client import AsyncRedis
from voicemon.rolling import BucketIncrement

# An applied offset outlives the markers of the events it covers (set at most a minute
# before it), so a replay that finds its own markers finds the applied offsets too. A time to
# live by Redis's clock, not an instant of a worker's: every worker writes a scope's hash, and
# one whose clock is behind would otherwise end everyone's offsets early.
APPLIED_TTL_MS = keys.SEEN_GENERATIONS * keys.SEEN_GENERATION_MS + 2 * 60_000

# A replay of a position decided while its event was in time keeps that decision after the
# event turned too late by the worker's clock (CONTRACT §3.2): the decided offsets live as
# long as a raw row, and a replay after a longer outage is decided anew.
DECIDED_TTL_MS = RAW_RETENTION_MS + 2 * 60 * 60_000

# Seen-markers (voicemon.keys). Scripts that read or write them take, for one shard group,
# three arguments (``_packed``): the generations that exist, the current one first, with their
# shard counts (MessagePack), the events' 16-byte digests end to end, and the group's key
# prefix. The script names a marker's hash as ``voicemon.keys.seen_hash`` does (a test holds
# them together); KEYS[1], the group's marker count, places the call on the group's slot.
_MARKERS = """
local generations, digests, group = cmsgpack.unpack(ARGV[1]), ARGV[2], ARGV[3]
local PER_CALL = 1000  -- fields per HMGET / HSET (Lua's unpack has a limit)
local prefixes = {}
for g = 1, #generations do
  prefixes[g] = group .. generations[g][1] .. ':'
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

# Called by RollingCounters.owners, per shard group. ARGV: the packed generations, the
# digests, the group's prefix. Returns per event the position that counted it, or ''.
_OWNERS = (
    _MARKERS
    + """
local owners = owners_of(#digests / 16)
return owners
"""
)

# Called by RollingCounters.claim, per shard group. KEYS: the group's marker count in the
# current generation. ARGV: the packed generations, the digests, the group's prefix, the
# packed positions, expiry of the current generation's hashes. If no event is marked yet,
# marks each with its position and returns nothing; otherwise writes nothing and returns
# every event's owner.
_CLAIM = (
    _MARKERS
    + """
local positions = cmsgpack.unpack(ARGV[4])
local n = #positions
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
  redis.call('PEXPIREAT', key, ARGV[5])
end
redis.call('INCRBY', KEYS[1], n)
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
return {}
"""
)

# Adds packed bucket increments (per bucket: its KEYS index, expiry, then field, value pairs)
# to the buckets' sorted sets (voicemon.keys.rolling_counter). Redis passes a Lua number on
# with 17 significant digits, so a value reaches the set as the very double that was packed.
_APPLY_BUCKETS = """
local function apply_buckets(buckets)
  for _, bucket in ipairs(buckets) do
    local key = KEYS[bucket[1]]
    local fields = bucket[3]
    for f = 1, #fields, 2 do
      redis.call('ZINCRBY', key, fields[f + 1], fields[f])
    end
    redis.call('PEXPIREAT', key, bucket[2])
  end
end
"""

# Called by RollingCounters.add, per counter scope's hash tag. KEYS: the scope's applied
# offsets, [the counters' epoch and sentinel and the decided offsets, for {p}], then its
# buckets. ARGV: the packed partitions (partition, first offset, last offset, packed bucket
# increments of its events), the applied offsets' time to live, the number of KEYS before the
# buckets, the decided offsets' time to live, the writer's token. A partition's fifth element
# is the log-append time of its last message (-1: unknown); a decided mark is
# "offset:time:token". If a partition's applied offset lies inside [first, last], writes
# nothing and returns 0 and those partitions with their applied offsets
# (the caller retries with the events after them); otherwise adds the increments of each
# partition whose applied offset lies before it, moves that offset (and for {p} the decided
# mark) and returns 1 and, for {p}, each partition with its decided mark before the call.
_ADD = (
    _APPLY_BUCKETS
    + """
local partitions = cmsgpack.unpack(ARGV[1])
local applied = {}
local inside = {}
for i, part in ipairs(partitions) do
  applied[i] = tonumber(redis.call('HGET', KEYS[1], part[1]) or '-1')
  if applied[i] >= part[2] and applied[i] < part[3] then
    inside[#inside + 1] = part[1]
    inside[#inside + 1] = applied[i]
  end
end
if #inside > 0 then return {0, unpack(inside)} end
if ARGV[3] == '4' and redis.call('EXISTS', KEYS[2]) == 0 then
  -- The first counting ever also creates the counters' epoch and sentinel, so that a flush
  -- of the counter keys is told from a first start however soon it comes (RollingCounters.lost).
  redis.call('SET', KEYS[2], '1')
  redis.call('SET', KEYS[3], '1')
end
local decided = {1}
for i, part in ipairs(partitions) do
  if applied[i] < part[2] then
    apply_buckets(part[4])
    redis.call('HSET', KEYS[1], part[1], part[3])
  end
  if ARGV[3] == '4' then
    local before = redis.call('HGET', KEYS[4], part[1]) or ''
    local offset, appended = string.match(before, '^(%d+):(-?%d+)')
    offset, appended = tonumber(offset) or -1, tonumber(appended) or -1
    -- Raised over the chunk, or lowered to it if it was appended later (a recreated topic).
    local anew = part[5] >= 0 and appended >= 0 and part[5] > appended and part[3] < offset
    if offset < part[3] or anew then
      redis.call('HSET', KEYS[4], part[1], part[3] .. ':' .. part[5] .. ':' .. ARGV[5])
    end
    decided[#decided + 1] = part[1]
    decided[#decided + 1] = before
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '4' then redis.call('PEXPIRE', KEYS[4], ARGV[4]) end
return decided
"""
)

# Called by RollingCounters.settle. KEYS: one marker's hashes. ARGV: field, position, and the
# value to set if a hash holds the position ('' to leave it). Returns 1 if one held it.
_HOLDS = """
for k = 1, #KEYS do
  if redis.call('HGET', KEYS[k], ARGV[1]) == ARGV[2] then
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[k], ARGV[1], ARGV[3]) end
    return 1
  end
end
return 0
"""

# Called by RollingCounters.settle, per counter scope's hash tag. KEYS: the take-back's
# marker, then buckets. ARGV: its time to live, the packed bucket increments. Applies them
# once: only if the marker was not set yet.
_TAKE_BACK = (
    _APPLY_BUCKETS
    + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
apply_buckets(cmsgpack.unpack(ARGV[2]))
return 1
"""
)

# Called by RollingCounters.replace, per counter scope's hash tag. KEYS: its buckets. ARGV:
# their packed bucket values. Each bucket holds those values only. (Scripts here, never a
# MULTI: why in tests/unit/test_redis_layout.py, test_no_redis_transaction_pipelines.)
_REPLACE = (
    _APPLY_BUCKETS
    + """
for k = 1, #KEYS do redis.call('DEL', KEYS[k]) end
apply_buckets(cmsgpack.unpack(ARGV[1]))
"""
)

# KEYS: the counters' sentinel, the sentinel of the hashes that preceded them (one slot).
_SENTINEL = """
redis.call('SET', KEYS[1], '1')
redis.call('DEL', KEYS[2])
"""


class Span(NamedTuple):
    """A chunk's messages in one input partition."""

    first: int
    last: int
    appended_ms: int  # the newest log-append time among them; -1 if one has none


class DecidedMark(NamedTuple):
    """Through which message of an input partition the counting workers decided every one
    (``keys.decided``): its offset and log-append time (-1: unknown)."""

    offset: int
    appended_ms: int
    token: str = ""  # the process that set it (``RollingCounters.token``)

    @classmethod
    def parse(cls, value: bytes | str | None) -> DecidedMark | None:
        if not value:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        offset, appended, *token = text.split(":")
        return cls(int(offset), int(appended), token[0] if token else "")

    def covers(self, offset: int, appended_ms: int | None) -> bool:
        """Whether the message at ``offset`` (log-append time ``appended_ms``, None if it has
        none) was decided (pure). A lower offset appended later than the mark is of an events
        topic recreated since, as for the DLQ's settled marks (``consumers.publish_once``)."""
        if offset > self.offset:
            return False
        return appended_ms is None or self.appended_ms < 0 or appended_ms <= self.appended_ms


Call = tuple[AsyncScript, list[str], list[Any]]
# Script calls one chunk keeps in flight on a Redis Cluster at once: the cluster client opens a
# connection per call in flight and refuses (MaxConnectionsError, no waiting) past its limit
# per node, 100 by default, shared with the worker's other Redis work.
CLUSTER_CALLS_IN_FLIGHT = 32
MARKED_NOW = ""  # RollingCounters.claim's answer for an event it marked (never a position)


def packed_buckets(buckets: Mapping[str, BucketIncrement], first_key: int) -> list[Any]:
    """``_APPLY_BUCKETS``'s argument for ``buckets``, whose keys are KEYS from index
    ``first_key`` in order (pure, before MessagePack, whose 64-bit floats reach the script
    unchanged)."""
    packed: list[Any] = []
    for index, bucket in enumerate(buckets.values(), start=first_key):
        fields: list[str | float] = []
        for field, value in bucket.fields.items():
            fields += [field, value]
        packed.append((index, bucket.expire_at_ms, fields))
    return packed


def by_tag(buckets: Mapping[str, BucketIncrement]) -> dict[str, dict[str, BucketIncrement]]:
    """Bucket increments split by their keys' hash tag: one counter scope each (pure)."""
    split: dict[str, dict[str, BucketIncrement]] = defaultdict(dict)
    for key, bucket in buckets.items():
        split[keys.hash_tag(key)][key] = bucket
    return dict(split)


def scope_increments(
    rows: Sequence[RawRow],
    now_ms: int,
    after: Mapping[tuple[str, int], int],
    spans: Mapping[int, Span] | None = None,
) -> dict[str, list[tuple[int, int, int, dict[str, BucketIncrement]]]]:
    """Per counter scope's hash tag, per input partition: the first and last offsets of the
    rows, and their bucket increments; for a (tag, partition) in ``after`` only the rows
    after that offset count. The platform's range also covers the chunk's ``spans`` (first
    and last offset per partition), rows or not: its call raises the decided marks
    (``RollingCounters.decided_through``) (pure)."""
    per_partition: dict[int, list[RawRow]] = defaultdict(list)
    for row in rows:
        per_partition[row.position.partition].append(row)
    spans = spans or {}
    platform = keys.scope_tag(None)
    found: dict[str, list[tuple[int, int, int, dict[str, BucketIncrement]]]] = defaultdict(list)
    for partition in sorted(per_partition.keys() | spans.keys()):
        owned = per_partition.get(partition, [])
        split = by_tag(rolling.increments((row.event for row in owned), now_ms)) if owned else {}
        offsets = [row.position.offset for row in owned]
        span = spans.get(partition)
        # The rows' bounds, once per partition, not per tag (a min and max over the
        # partition's rows for each organization made this quadratic). No rows: only the
        # platform's range, the span's, is used.
        own = wide = (min(offsets), max(offsets)) if offsets else (-1, -1)
        if span is not None:
            split.setdefault(platform, {})
            wide = (span.first, span.last)
            if offsets:
                wide = min(own[0], span.first), max(own[1], span.last)
        for tag, buckets in split.items():
            widened = span is not None and tag == platform
            first, last = wide if widened else own
            floor = after.get((tag, partition))
            if floor is None:
                found[tag].append((partition, first, last, buckets))
                continue
            kept = [row for row in owned if row.position.offset > floor]
            later = by_tag(rolling.increments((row.event for row in kept), now_ms)).get(tag, {})
            if widened:
                if last > floor:
                    found[tag].append((partition, floor + 1, last, later))
            elif later:
                offsets_after = [row.position.offset for row in kept]
                found[tag].append((partition, min(offsets_after), max(offsets_after), later))
    return dict(found)


def _packed(shards: Mapping[int, int], digests: Sequence[bytes], group: int) -> list[Any]:
    """The generations (current first) with their shard counts, the events' digests end to
    end (Redis's MessagePack has no binary type, so they travel apart) and the group's key
    prefix."""
    prefix = f"{keys.PREFIX}:seen:{keys.seen_tag(group)}:"
    return [msgspec.msgpack.encode(list(shards.items())), b"".join(digests), prefix]


def _groups(event_ids: Sequence[str]) -> dict[int, tuple[list[int], list[bytes]]]:
    """Per shard group, the indexes of its events, in order, and their digests (pure)."""
    groups: dict[int, tuple[list[int], list[bytes]]] = {}
    for index, event_id in enumerate(event_ids):
        digest = keys.digest(event_id)
        group = int.from_bytes(digest[:4], "big") % keys.SEEN_GROUPS  # keys.seen_group
        members = groups.get(group)
        if members is None:
            members = groups[group] = ([], [])
        members[0].append(index)
        members[1].append(digest)
    return groups


class RollingCounters:
    """The Redis side of ingest: seen-marker lookups, claims and counter increments."""

    def __init__(self, redis: AsyncRedis) -> None:
        self._redis = redis
        self._owners = redis.register_script(_OWNERS)
        self._claim = redis.register_script(_CLAIM)
        self._add = redis.register_script(_ADD)
        self._holds = redis.register_script(_HOLDS)
        self._take_back = redis.register_script(_TAKE_BACK)
        self._replace = redis.register_script(_REPLACE)
        self._sentinel = redis.register_script(_SENTINEL)
        self._shards: dict[int, int] = {}  # generation -> shard count, once known
        self.token = secrets.token_hex(6)  # names this process in the decided marks it sets
        self._in_flight = asyncio.Semaphore(CLUSTER_CALLS_IN_FLIGHT)

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
            pipe = self._redis.pipeline(transaction=False)
            for group in range(keys.SEEN_GROUPS):
                pipe.get(keys.seen_count(current - 1, group))
            previous = sum(int(value or 0) for value in await pipe.execute())
            chosen = keys.shards_for(previous)
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
        count_generation = next(iter(shards))
        groups = _groups(event_ids)
        calls: list[Call] = []
        for group, (_, digests) in groups.items():
            calls.append((self._owners, [keys.seen_count(count_generation, group)],
                          _packed(shards, digests, group)))  # fmt: skip
        found: list[str | None] = [None] * len(event_ids)
        replies = await self._run(calls)
        for (members, _), owners in zip(groups.values(), replies, strict=True):
            for i, value in zip(members, owners, strict=True):
                found[i] = value.decode() if value else None
        return found

    async def claim(
        self, new_events: Sequence[tuple[str, str]], now_ms: int
    ) -> list[str | None] | None:
        """Mark ``new_events`` (event id, position) seen, each shard group of them at once if
        none of the group's is marked yet. Returns None if every group was marked; otherwise
        per event ``MARKED_NOW`` if this call marked it, else who counted it (None: nobody,
        its group was refused for another event). The caller reclassifies and claims the
        events still unmarked."""
        if not new_events:
            return None
        shards = await self.shard_counts(now_ms, writing=True)
        generation = keys.seen_generation(now_ms)
        expire_at = keys.seen_expire_at_ms(now_ms)
        groups = _groups([event_id for event_id, _ in new_events])
        calls: list[Call] = []
        for group, (members, digests) in groups.items():
            positions = msgspec.msgpack.encode([new_events[i][1] for i in members])
            calls.append((self._claim, [keys.seen_count(generation, group)],
                          [*_packed(shards, digests, group), positions, expire_at]))  # fmt: skip
        owners: list[str | None] = [MARKED_NOW] * len(new_events)
        refused = False
        replies = await self._run(calls)
        for (members, _), taken in zip(groups.values(), replies, strict=True):
            if taken:
                refused = True
                for j, i in enumerate(members):
                    owners[i] = taken[j].decode() or None
        return owners if refused else None

    async def add(
        self, owned: Sequence[RawRow], now_ms: int, spans: Mapping[int, Span] | None = None
    ) -> dict[int, DecidedMark | None]:
        """Add the increments of the ``owned`` rows (the events counted at their own
        position) to every counter scope that has not added them yet (its applied offsets);
        the platform's applied offsets and decided marks move over the chunk's ``spans`` too.
        Returns the decided marks per partition of ``spans`` as they were before."""
        spans = spans or {}
        after: dict[tuple[str, int], int] = {}
        before: dict[int, DecidedMark | None] = {}
        pending = scope_increments(owned, now_ms, after, spans)
        while pending:
            tags = list(pending)
            calls = [self._add_call(tag, pending[tag], spans) for tag in tags]
            retry: set[str] = set()
            for tag, reply in zip(tags, await self._run(calls), strict=True):
                pairs = zip(reply[1::2], reply[2::2], strict=True)
                if reply[0] == 1:
                    before.update((int(p), DecidedMark.parse(mark)) for p, mark in pairs)
                    continue
                for partition, offset in pairs:
                    after[tag, int(partition)] = int(offset)
                    retry.add(tag)
            if not retry:
                return before
            again = scope_increments(owned, now_ms, after, spans)
            pending = {tag: again[tag] for tag in retry if tag in again}
        return before

    def _add_call(
        self,
        tag: str,
        partitions: list[tuple[int, int, int, dict[str, BucketIncrement]]],
        spans: Mapping[int, Span],
    ) -> Call:
        head = [keys.applied(tag)]
        if tag == keys.hash_tag(keys.COUNTERS_SENTINEL):
            head += [keys.COUNTERS_EPOCH, keys.COUNTERS_SENTINEL, keys.decided(tag)]
        bucket_keys: list[str] = []
        packed = []
        for partition, first, last, buckets in partitions:
            start = len(head) + len(bucket_keys) + 1
            bucket_keys += list(buckets)
            span = spans.get(partition)
            appended = span.appended_ms if span is not None else -1
            packed.append(
                (partition, first, last, packed_buckets(buckets, first_key=start), appended)
            )
        args = [msgspec.msgpack.encode(packed), APPLIED_TTL_MS, len(head), DECIDED_TTL_MS,
                self.token]  # fmt: skip
        return self._add, head + bucket_keys, args

    async def decided_through(self, partitions: Sequence[int]) -> dict[int, DecidedMark]:
        """Per input partition, the mark through which a counting worker decided every
        message (``keys.decided``), where one is known."""
        if not partitions:
            return {}
        values = await self._redis.hmget(keys.decided(keys.scope_tag(None)), list(partitions))
        marks = {p: DecidedMark.parse(v) for p, v in zip(partitions, values, strict=True)}
        return {p: mark for p, mark in marks.items() if mark is not None}

    async def settle(
        self, event_id: str, position: str, decrements: Mapping[str, BucketIncrement], now_ms: int
    ) -> bool:
        """Take back what the event counted at ``position`` (the store refused it), once: each
        scope takes it back once (a take-back marker), then the event's seen-marker is marked
        settled, so a replay neither counts it nor takes it back again."""
        shards = await self.shard_counts(now_ms, writing=False)
        found = keys.marker(event_id)
        hashes = [keys.seen_hash(generation, count, found) for generation, count in shards.items()]
        if not hashes or not await self._holds(keys=hashes, args=[found.field, position, ""]):
            return False
        calls: list[Call] = []
        for tag, buckets in by_tag(decrements).items():
            packed = msgspec.msgpack.encode(packed_buckets(buckets, first_key=2))
            calls.append((self._take_back, [keys.taken_back(tag, position), *buckets],
                          [APPLIED_TTL_MS, packed]))  # fmt: skip
        await self._run(calls)
        args: list[bytes | str] = [found.field, position, keys.SETTLED + position]
        return bool(await self._holds(keys=hashes, args=args))

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        """Run script calls at once: pipelined on one primary (one round trip), concurrently
        on a Redis Cluster (whose client pipelines no scripts), at most
        ``CLUSTER_CALLS_IN_FLIGHT`` at a time (a chunk holds one call per organization in
        it, and the client refuses calls past its connections). A script the node does not know
        yet (a new or failed-over primary) is loaded and its calls run again."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(3):
            replies = await self._send([calls[i] for i in todo])
            missing: list[int] = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                return results
            for script in {calls[i][0] for i in missing}:
                await self._redis.script_load(script.script)  # on every primary of a cluster
            todo = missing
        raise NoScriptError("a script could not be loaded on the Redis node of its keys")

    async def _send(self, calls: Sequence[Call]) -> list[Any]:
        if isinstance(self._redis, RedisCluster):
            cluster = self._redis

            async def send(script: AsyncScript, keys_: list[Any], args: list[Any]) -> Any:
                async with self._in_flight:
                    return await cluster.evalsha(script.sha, len(keys_), *keys_, *args)

            sent = (send(*call) for call in calls)
            return list(await asyncio.gather(*sent, return_exceptions=True))
        pipe = self._redis.pipeline(transaction=False)
        for script, keys_, args in calls:
            pipe.evalsha(script.sha, len(keys_), *keys_, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def lost(self) -> bool:
        """True when the rolling-counter keys were flushed: their sentinel is gone but the
        counters' epoch (a key outside them, in the sentinel's slot) says they existed. On a
        first start both are absent and the sentinel is simply set."""
        sentinel, epoch = await self._redis.mget([keys.COUNTERS_SENTINEL, keys.COUNTERS_EPOCH])
        if sentinel is not None:
            return False
        if epoch is None:  # one slot ({p}): MSET is atomic there
            await self._redis.mset({keys.COUNTERS_EPOCH: "1", keys.COUNTERS_SENTINEL: "1"})
            return False
        return True

    async def replace(self, buckets: Mapping[str, BucketIncrement]) -> None:
        """Overwrite the window's buckets with ``buckets`` (a rebuild), in one script call
        per counter scope; then set the sentinel and delete the legacy one, at once."""
        for scope in by_tag(buckets).values():
            packed = msgspec.msgpack.encode(packed_buckets(scope, first_key=1))
            await self._replace(keys=list(scope), args=[packed])
        await self._sentinel(keys=[keys.COUNTERS_SENTINEL, keys.LEGACY_COUNTERS_SENTINEL])
