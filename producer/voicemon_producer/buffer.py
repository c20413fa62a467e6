"""The producer's buffer bound and overflow episodes, pure (the producer holds its lock).

Everything the producer holds for the caller — events in the pending batch and in messages
the broker has not answered yet — counts against one bound, by events and by bytes. An event
that would break it is the overflow policy's: dropped (``"drop"``, the default: the newest
event is the one lost, and counted) or waited for up to a bound (``"block"``), then dropped.
An *episode* runs from the first drop to the next event the buffer takes after a quiet second
without drops (a buffer that flaps between full and not is one episode): one log line when it
starts, one when it ends with its count, never one per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Overflow = Literal["drop", "block"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("drop", "block")


@dataclass(frozen=True, slots=True)
class BufferLimits:
    """At most ``max_events`` events and ``max_bytes`` bytes held; ``overflow`` says what a
    publish beyond them does; ``block_s`` is how long ``"block"`` waits for room."""

    max_events: int
    max_bytes: int
    overflow: Overflow = "drop"
    block_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 1:
            raise ValueError(
                f"the buffer must hold something (buffer_events={self.max_events}, "
                f"buffer_bytes={self.max_bytes})"
            )
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be 'drop' or 'block', not {self.overflow!r}")
        if self.block_s < 0:
            raise ValueError(f"block_timeout_s must be 0 or more, not {self.block_s}")


@dataclass
class Custody:
    """What the producer holds now: events accepted and not yet answered by the broker."""

    limits: BufferLimits
    events: int = 0
    bytes: int = 0

    def admits(self, size: int) -> bool:
        """Whether one more event of ``size`` bytes stays within the bound. An empty buffer
        takes any single event, so an event larger than ``max_bytes`` is not refused forever
        (events are at most 64 KiB: CONTRACT §3)."""
        if self.events == 0:
            return True
        return self.events < self.limits.max_events and self.bytes + size <= self.limits.max_bytes

    def take(self, size: int) -> None:
        self.events += 1
        self.bytes += size

    def release(self, events: int, size: int) -> None:
        self.events -= events
        self.bytes -= size


EPISODE_QUIET_S = 1.0


@dataclass
class OverflowEpisode:
    """Drops since the buffer last had room for a while: says when a log line is due."""

    dropped: int = 0
    last_drop: float = 0.0

    def drop(self, now: float) -> bool:
        """Count one dropped event; True if it starts an episode (log it)."""
        self.dropped += 1
        self.last_drop = now
        return self.dropped == 1

    def admit(self, now: float) -> int:
        """The buffer took an event: how many the episode that this ends dropped (0: none
        was running, or its last drop is less than ``EPISODE_QUIET_S`` ago)."""
        if not self.dropped or now - self.last_drop < EPISODE_QUIET_S:
            return 0
        dropped, self.dropped = self.dropped, 0
        return dropped
