"""Publishing to Kafka with confluent-kafka: the producer library pipeline services use
(``EventProducer``, from the light ``voicemon_producer`` package, plus ``from_settings``
for a deployment's ``VOICEMON_*`` settings), and the plain publisher of the DLQ and the
snapshots (``KafkaPublisher``). ``from voicemon.producer import EventProducer`` keeps working;
a service that installs only ``voicemon-producer`` imports ``voicemon_producer`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer

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
           "EventProducer", "InvalidEvent", "KafkaPublisher", "ProducerClosed",
           "ProducerError", "ProducerStats", "settings_options"]  # fmt: skip

Headers = Sequence[tuple[str, bytes]]


class KafkaPublisher:
    """A confluent-kafka producer that knows whether everything it sent was acknowledged."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": 8 * 1024 * 1024,
                **config,
            }
        )
        self._failures: list[str] = []

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
    ) -> None:
        """Queue one message (to ``partition`` if given, else by the key's hash)."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=-1 if partition is None else partition,  # -1: by the key's hash
                    headers=list(headers) or None,
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error.str()}")

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every message sent so far is acknowledged, or raise DeliveryError."""
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if remaining:
            failures.append(f"{remaining} message(s) still unacknowledged after {timeout_s}s")
        if failures:
            raise DeliveryError("; ".join(failures[:5]))


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
