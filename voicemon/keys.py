"""Redis key names, in one place.

Keys of one real-time scope share a hash tag (``{p}`` for the platform, ``{o:<org>}`` for an
organization), so one real-time read touches one Redis Cluster slot.
"""

from __future__ import annotations

PREFIX = "vm"


def scope_tag(organization_id: str | None) -> str:
    return "{p}" if organization_id is None else "{o:" + organization_id + "}"


def rolling_counter(organization_id: str | None, minute: int) -> str:
    """The counters of one scope for one event-time minute (``minute`` = epoch ms // 60000)."""
    return f"{PREFIX}:rt:{scope_tag(organization_id)}:{minute}"


# Lives among the rolling-counter keys: if they are flushed it goes too, and the worker
# rebuilds the window from raw events.
COUNTERS_SENTINEL = f"{PREFIX}:rt:{{p}}:sentinel"
COUNTERS_EPOCH = f"{PREFIX}:counters_epoch"  # outside them: says the counters ever existed


def seen_event(event_id: str) -> str:
    """Dedup marker of an event id; its value is the position that first counted it."""
    return f"{PREFIX}:seen:{event_id}"


def dead_lettered(partition: int, offset: int, batch_index: int | None) -> str:
    """Marker of a rejection already sent to the DLQ, so a replay does not send it twice."""
    return f"{PREFIX}:dlq:{partition}:{offset}:{-1 if batch_index is None else batch_index}"


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
