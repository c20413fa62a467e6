"""Publishing to Kafka with confluent-kafka: the helper pipeline services use, and the DLQ.

``EventProducer.publish`` buffers events and sends them as batches (CONTRACT §3.0), bounded
by count, bytes and a short linger; ``flush`` waits until Kafka has acknowledged everything.
Delivery failures are counted and raised from ``flush``, never silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]


class DeliveryError(Exception):
    """Kafka did not acknowledge some messages. Operator action: check the broker and topic."""


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


class EventProducer:
    """Batches pipeline events into messages on the events topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = "voice.pipeline.events",
        *,
        max_events: int = 500,
        max_bytes: int = 512 * 1024,
        linger_s: float = 0.05,
        batch: bool = True,
        **config: Any,
    ) -> None:
        """``config``: more librdkafka properties, e.g. the security of
        ``voicemon.kafka_client.confluent_security(settings)``."""
        self._publisher = KafkaPublisher(bootstrap, **config)
        self._topic = topic
        self._max_events = max_events if batch else 1
        self._max_bytes = max_bytes
        self._linger_s = linger_s
        self._batch = batch
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._first_key: bytes | None = None
        self._opened_at = 0.0

    def publish(self, event: Mapping[str, Any]) -> None:
        encoded = orjson.dumps(event)
        if self._pending and self._pending_bytes + len(encoded) + 1 > self._max_bytes:
            self._send_pending()
        if not self._pending:
            self._first_key = str(event.get("artifact_id", "")).encode()
            self._opened_at = time.monotonic()
        self._pending.append(encoded)
        self._pending_bytes += len(encoded) + 1
        if len(self._pending) >= self._max_events or self._lingered():
            self._send_pending()

    def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Send bytes as they are (for tests and the load generator's malformed share)."""
        self._publisher.send(self._topic, value, key)

    def _lingered(self) -> bool:
        return time.monotonic() - self._opened_at >= self._linger_s

    def _send_pending(self) -> None:
        if not self._pending:
            return
        value = b"[" + b",".join(self._pending) + b"]" if self._batch else self._pending[0]
        self._publisher.send(self._topic, value, self._first_key)
        self._pending, self._pending_bytes = [], 0

    def flush(self, timeout_s: float = 30.0) -> None:
        self._send_pending()
        self._publisher.flush(timeout_s)
