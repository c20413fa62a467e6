"""The producer's errors, as older code imports them: they live in ``voicemon_producer.errors``."""

from voicemon_producer.errors import (
    BufferFull,
    DeliveryError,
    InvalidEvent,
    ProducerClosed,
    ProducerError,
)

__all__ = ["BufferFull", "DeliveryError", "InvalidEvent", "ProducerClosed", "ProducerError"]
