"""The producer library's errors: one root, each message one sentence saying what to do."""

from __future__ import annotations

from voicemon_producer.event import RejectReason


class ProducerError(Exception):
    """The root of the producer library's errors."""


class InvalidEvent(ProducerError, ValueError):
    """An event the worker would reject, refused before anything is sent.

    ``reason`` is the code the worker's DLQ would have carried (CONTRACT §3.3).
    """

    def __init__(self, event_type: str | None, reason: RejectReason, detail: str) -> None:
        what = f"{event_type} event" if event_type else "event"
        super().__init__(
            f"{what} not sent: {detail} (reason {reason.value}); fix the event and publish it again"
        )
        self.reason = reason
        self.detail = detail


class DeliveryError(ProducerError):
    """Kafka did not acknowledge some messages. Operator action: check the broker and topic."""


class ProducerClosed(ProducerError):
    """A publish on a producer that was closed."""


class BufferFull(DeliveryError):
    """The event was dropped, not sent: the producer's buffer was full (the broker is down or
    slower than the publishers) and the overflow policy dropped it. Counted in ``stats()``."""
