"""The producer library pipeline services use (``EventProducer``, from the light
``voicemon_producer`` package, plus ``from_settings`` for a deployment's ``VOICEMON_*``
settings); the plain publisher of the DLQ and the snapshots is
``voicemon.publisher.KafkaPublisher``. ``from voicemon.producer import EventProducer`` keeps
working; a service that installs only ``voicemon-producer`` imports ``voicemon_producer``
instead.
"""

from __future__ import annotations

from typing import Any, Self

from voicemon.kafka_client import confluent_config
from voicemon.settings import Settings
from voicemon_producer import producer as _core
from voicemon_producer.errors import (
    BufferFull,
    DeliveryError,
    InvalidEvent,
    ProducerClosed,
    ProducerError,
)
from voicemon_producer.producer import EVENT_PRODUCER_DEFAULTS, Delivery, ProducerStats

__all__ = ["EVENT_PRODUCER_DEFAULTS", "BufferFull", "Delivery", "DeliveryError",
           "EventProducer", "InvalidEvent", "ProducerClosed",
           "ProducerError", "ProducerStats", "settings_options"]  # fmt: skip


class EventProducer(_core.EventProducer):
    """``voicemon_producer.EventProducer`` (see there), plus ``from_settings``."""

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A producer for the deployment ``settings`` describe (``VOICEMON_*``): its broker,
        events topic, stages and Kafka security. ``options`` are the constructor's keyword
        arguments."""
        return cls(**{**settings_options(settings), **options})


def settings_options(settings: Settings) -> dict[str, Any]:
    """``EventProducer``'s arguments for a deployment: broker, events topic, stages and the
    Kafka client settings (the security of ``VOICEMON_KAFKA_*``, ``kafka_client``)."""
    return {
        "bootstrap": settings.kafka_bootstrap,
        "topic": settings.events_topic,
        "stages": settings.stages,
        **confluent_config(settings),
    }
