"""Redis key names, in one place.

Every Lua script and transaction touches keys of one hash tag, so that it runs on one Redis
Cluster slot: keys of one real-time scope share theirs (``{p}`` for the platform,
``{o:<org>}`` for an organization), so one real-time read touches one slot too; seen-markers
are split into ``SEEN_GROUPS`` shard groups ``{s<k>}`` by their event id's digest; store
leases share ``{leases}``, DLQ markers ``{dlq}``, the window closer's keys ``{closer}``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PREFIX = "vm"


def scope_tag(organization_id: str | None) -> str:
    return "{p}" if organization_id is None else "{o:" + organization_id + "}"


def rolling_counter(organization_id: str | None, minute: int) -> str:
    """The counters of one scope for one event-time minute (``minute`` = epoch ms // 60000):
    a sorted set whose members are the counter fields and whose scores are their values, so
    that one ``ZUNION`` sums a window on the server (``aggregators.query.realtime``)."""
    return f"{PREFIX}:rz:{scope_tag(organization_id)}:{minute}"


# Lives among the rolling-counter keys: if they are flushed it goes too, and the worker
# rebuilds the window from raw events (as after an upgrade from the hashes of ``vm:rt:``).
COUNTERS_SENTINEL = f"{PREFIX}:rz:{{p}}:sentinel"
# The sentinel of the counters' hashes before they were sorted sets: the first rebuild deletes
# it, so that a rollback to a version that counts into those hashes rebuilds them too.
LEGACY_COUNTERS_SENTINEL = f"{PREFIX}:rt:{{p}}:sentinel"
# Outside them (but in the sentinel's slot): says the counters ever existed.
COUNTERS_EPOCH = f"{PREFIX}:{{p}}:counters_epoch"


def hash_tag(key: str) -> str:
    """The hash tag of a key, braces included (the part Redis Cluster hashes)."""
    start = key.index("{")
    return key[start : key.index("}", start) + 1]


def applied(tag: str) -> str:
    """Per input partition, the offset through which the counters of the scope of ``tag``
    hold the increments of the events counted there (``consumers.rolling_counters``). Outside
    the rolling-counter keys, so that a flush of those leaves it."""
    return f"{PREFIX}:applied:{tag}"


def decided(tag: str) -> str:
    """Per input partition, the offset through which a counting worker decided every message
    (accepted, duplicate or rejected): moved with the platform's applied offsets
    (``consumers.rolling_counters``), but never gating an increment, so it may outlive them."""
    return f"{PREFIX}:decided:{tag}"


def replicated(tag: str) -> str:
    """Written just before ``WAIT`` on its connection (``voicemon.redis_client.Replication``)."""
    return f"{PREFIX}:replicated:{tag}"


def taken_back(tag: str, position: str) -> str:
    """Says that what the event at ``position`` counted was taken back from the counters of
    the scope of ``tag`` (``RollingCounters.settle``)."""
    return f"{PREFIX}:taken_back:{tag}:{position}"


# Seen-markers (CONTRACT §3.1): the position that first counted an event id, kept about an
# hour and a half after arrival, compactly. A marker is a field of a hash: the hash is one of
# the shards of the generation (SEEN_GENERATION_MS of arrival time) it was set in, the field
# a 12-byte digest of the event id. Lookups read the current generation and the ones before
# it, so a marker is found for 80 to 100 minutes. Each generation has as many shards as the
# previous one's marker count needs for about SEEN_PER_SHARD markers a hash, so that hashes
# stay in Redis's compact listpack encoding (up to 128 entries by default) at any event rate:
# about 35 bytes a marker, against ~146 for a key of its own. The hashes are split into
# SEEN_GROUPS shard groups by the same digest (group = slot % SEEN_GROUPS, a fixed number: it
# names the keys); a group's keys share one hash tag, so ingest writes one group's markers
# in one script call on one Redis Cluster slot.
SEEN_GENERATION_MS = 20 * 60_000
SEEN_GENERATIONS = 5
SEEN_PER_SHARD = 64
SEEN_MIN_SHARDS = 1_024
SEEN_MAX_SHARDS = 1 << 22
SEEN_GROUPS = 16
# A marker outlives its event's arrival by at least this (a generation is lost at most).
SEEN_FOR_MS = (SEEN_GENERATIONS - 1) * SEEN_GENERATION_MS


SETTLED = "unstorable@"  # a settled marker's value: this prefix and the position


@dataclass(frozen=True, slots=True)
class Marker:
    """An event id's seen-marker: the slot that picks its shard, and its field."""

    slot: int
    field: bytes


def digest(event_id: str) -> bytes:
    """16 bytes of an event id: the first 4 pick its shard (big-endian), the rest its field."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def marker(event_id: str) -> Marker:
    found = digest(event_id)
    return Marker(int.from_bytes(found[:4], "big"), found[4:])


def seen_generation(now_ms: int) -> int:
    return now_ms // SEEN_GENERATION_MS


def seen_generations(now_ms: int) -> list[int]:
    """The generations a marker may be in at ``now_ms``, the current one first."""
    current = seen_generation(now_ms)
    return [current - age for age in range(SEEN_GENERATIONS)]


def seen_group(found: Marker) -> int:
    return found.slot % SEEN_GROUPS


def seen_tag(group: int) -> str:
    return "{s" + str(group) + "}"


def seen_hash(generation: int, shards: int, found: Marker) -> str:
    return f"{PREFIX}:seen:{seen_tag(seen_group(found))}:{generation}:{found.slot % shards}"


def seen_shards(generation: int) -> str:
    """How many shards the generation has (set once, by its first writer)."""
    return f"{PREFIX}:seen:{{shards}}:{generation}"


def seen_count(generation: int, group: int) -> str:
    """How many markers the generation received in a shard group."""
    return f"{PREFIX}:seen:{seen_tag(group)}:{generation}:count"


def shards_for(previous_count: int) -> int:
    """Shards of a generation after one that received ``previous_count`` markers: a power of
    two giving about SEEN_PER_SHARD markers a hash at the same rate (pure)."""
    wanted = max(SEEN_MIN_SHARDS, -(-previous_count // SEEN_PER_SHARD))
    return min(SEEN_MAX_SHARDS, 1 << (wanted - 1).bit_length())


def seen_expire_at_ms(now_ms: int) -> int:
    """When the current generation's hashes are no longer read (plus a minute of slack)."""
    return (seen_generation(now_ms) + SEEN_GENERATIONS) * SEEN_GENERATION_MS + 60_000


def dead_lettered(partition: int, offset: int, batch_index: int | None) -> str:
    """Marker of a rejection already sent to the DLQ, so a replay does not send it twice."""
    return f"{PREFIX}:{{dlq}}:{partition}:{offset}:{-1 if batch_index is None else batch_index}"


def dlq_settled(step: str) -> str:
    """Per input partition, "offset:log-append ms" of the last letter a step (``count`` or
    ``store``) settled there (``consumers.publish_once``); one small hash per step, no TTL."""
    return f"{PREFIX}:{{dlq}}:settled:{step}"


def store_lease(partition: int) -> str:
    """Which worker stores the rows of an input partition now (``consumers.store_leases``)."""
    return f"{PREFIX}:{{leases}}:{partition}"


# The window closer's state shares one hash tag, so its scripts touch one cluster slot.
CLOSER = f"{PREFIX}:{{closer}}"
CLOSER_LEASE = f"{CLOSER}:lease"
NEXT_HOUR = f"{CLOSER}:next_hour"  # every hour before it is closed (or queued to close)
NEXT_DAY = f"{CLOSER}:next_day"
FIRST_DAY = f"{CLOSER}:first_day"  # days before it were never closed (before the first run)
DIRTY = f"{CLOSER}:dirty"  # windows to (re)compute: member "hourly:<ms>", score first mark
DIRTY_GENERATION = f"{CLOSER}:dirty_generation"  # member -> marks so far
WATERMARKS = f"{CLOSER}:watermarks"  # input partition -> newest event ms durably written
SNAPSHOT_VERSION = f"{CLOSER}:version"
