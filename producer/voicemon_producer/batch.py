"""The producer's pending batch (CONTRACT §3.0), pure: events in, one message value out.

A batch is a JSON array of at most ``MAX_BATCH_EVENTS`` events and ``MAX_MESSAGE_BYTES``
bytes; ``BatchLimits.capped`` holds a producer's own limits to those, whatever it asks for.
Each event added carries a ticket (the producer's future) that leaves with its message. Kafka
headers belong to a message, so events with different headers never share one: an event whose
headers differ from the pending batch's starts a new batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from voicemon_producer.event import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES

Headers = tuple[tuple[str, bytes], ...]

log = logging.getLogger(__name__)

Ticket = TypeVar("Ticket")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a pending batch is sent: ``max_events`` events, ``max_bytes`` bytes, or
    ``linger_s`` seconds after its first event, whichever comes first."""

    max_events: int
    max_bytes: int
    linger_s: float

    @classmethod
    def capped(cls, max_events: int, max_bytes: int, linger_s: float) -> BatchLimits:
        """The limits asked for, held to the contract's (a batch over them is rejected whole)."""
        if max_events < 1 or max_bytes < 1 or linger_s < 0:
            raise ValueError(
                f"batch limits must be positive (max_events={max_events}, "
                f"max_bytes={max_bytes}, linger_s={linger_s})"
            )
        limits = cls(min(max_events, MAX_BATCH_EVENTS), min(max_bytes, MAX_MESSAGE_BYTES), linger_s)
        if (limits.max_events, limits.max_bytes) != (max_events, max_bytes):
            log.warning(
                "batch limits capped to CONTRACT §3.0: %d events and %d bytes per message",
                limits.max_events,
                limits.max_bytes,
            )
        return limits


@dataclass(frozen=True, slots=True)
class OutgoingMessage(Generic[Ticket]):
    """One message to send: its value, its key, its headers, the tickets of the events it
    carries and their size as the producer's buffer counted it."""

    value: bytes
    key: bytes | None
    tickets: list[Ticket]
    headers: Headers = ()
    size: int = 0


@dataclass
class PendingBatch(Generic[Ticket]):
    """Encoded events waiting to be sent as one message. ``batch=False`` sends each event as
    a message of its own (a bare object, not an array)."""

    limits: BatchLimits
    batch: bool = True
    _events: list[bytes] = field(default_factory=list)
    _tickets: list[Ticket] = field(default_factory=list)
    _bytes: int = 1  # the closing bracket; each event adds itself and a bracket or comma
    _key: bytes | None = None
    _headers: Headers = ()
    _size: int = 0
    _opened_at: float = 0.0

    def __len__(self) -> int:
        return len(self._events)

    def fits(self, encoded: bytes, headers: Headers = ()) -> bool:
        """Whether ``encoded`` can join the batch without breaking its limits, or mixing
        headers. An empty batch takes any event (a single event is never over the message
        limit: see §3)."""
        if not self._events:
            return True
        return (
            self.batch
            and headers == self._headers
            and self._bytes + len(encoded) + 1 <= self.limits.max_bytes
        )

    def add(
        self,
        encoded: bytes,
        ticket: Ticket,
        key: bytes | None,
        now: float,
        headers: Headers = (),
        size: int = 0,
    ) -> None:
        """Append one event (``size``: what the producer's buffer counts for it); call
        ``fits`` first (and ``take`` the batch if it does not)."""
        if not self._events:
            self._key, self._opened_at, self._headers = key, now, headers
        self._events.append(encoded)
        self._tickets.append(ticket)
        self._bytes += len(encoded) + 1
        self._size += size

    def ready(self, now: float) -> bool:
        """Whether the batch should go now: full by count, or its linger has passed."""
        if not self._events:
            return False
        full = not self.batch or len(self._events) >= self.limits.max_events
        return full or now - self._opened_at >= self.limits.linger_s

    def deadline(self) -> float | None:
        """When the batch's linger ends, or None while it is empty."""
        return self._opened_at + self.limits.linger_s if self._events else None

    def take(self) -> OutgoingMessage[Ticket] | None:
        """The batch as one message, leaving this batch empty; None if it was empty."""
        if not self._events:
            return None
        value = b"[" + b",".join(self._events) + b"]" if self.batch else self._events[0]
        message = OutgoingMessage(value, self._key, self._tickets, self._headers, self._size)
        self._events, self._tickets, self._bytes, self._key = [], [], 1, None
        self._headers, self._size = (), 0
        return message
