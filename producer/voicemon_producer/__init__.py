"""voicemon-producer: publish voice-pipeline events to voicemon without ever blocking or
failing the service that publishes them. docs/producer.md in the voicemon repository has the
API, the overflow policy and the failure matrix."""

from voicemon_producer.async_producer import AsyncEventProducer
from voicemon_producer.buffer import Overflow
from voicemon_producer.builders import EventBuilder
from voicemon_producer.errors import (
    BufferFull,
    DeliveryError,
    InvalidEvent,
    ProducerClosed,
    ProducerError,
)
from voicemon_producer.producer import Delivery, EventProducer, ProducerStats

__all__ = [
    "AsyncEventProducer",
    "BufferFull",
    "Delivery",
    "DeliveryError",
    "EventBuilder",
    "EventProducer",
    "InvalidEvent",
    "Overflow",
    "ProducerClosed",
    "ProducerError",
    "ProducerStats",
]
