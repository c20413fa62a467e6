"""The DLQ: rejected payloads, untouched, with the headers of CONTRACT §2 and §3.0.

A rejection from input partition p goes to DLQ partition p mod n, so that a worker taking
over an abandoned rejection can read that one partition to learn whether it was published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumers.decode import RejectedPayload
from voicemon import telemetry
from voicemon.producer import DeliveryError, Headers, KafkaPublisher


@dataclass(frozen=True, slots=True)
class DeadLetter:
    rejected: RejectedPayload
    key: bytes | None
    partition: int
    offset: int

    def headers(self) -> Headers:
        rejection = self.rejected.rejection
        headers = [
            ("voicemon-reason", rejection.reason.value.encode()),
            ("voicemon-detail", rejection.detail.encode()),
            ("voicemon-source-partition", str(self.partition).encode()),
            ("voicemon-source-offset", str(self.offset).encode()),
        ]
        if self.rejected.batch_index is not None:
            headers.append(("voicemon-batch-index", str(self.rejected.batch_index).encode()))
        return headers

    @property
    def source(self) -> tuple[int, int, int | None]:
        return self.partition, self.offset, self.rejected.batch_index


def _source(headers: Any) -> tuple[int, int, int | None]:
    """The (source partition, source offset, batch index) of a DLQ record's headers."""
    values = {name: bytes(value).decode() for name, value in headers or [] if value is not None}
    batch_index = values.get("voicemon-batch-index")
    return (
        int(values["voicemon-source-partition"]),
        int(values["voicemon-source-offset"]),
        None if batch_index is None else int(batch_index),
    )


class DeadLetters:
    def __init__(
        self,
        publisher: KafkaPublisher,
        bootstrap: str,
        topic: str,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        """``security``: the librdkafka security properties of the DLQ reader
        (``voicemon.kafka_client.confluent_security``)."""
        self._publisher = publisher
        self._topic = topic
        self._reader = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "voicemon-dlq-check",
             "enable.auto.commit": False, "enable.partition.eof": True, **(security or {})}
        )  # fmt: skip
        self._partitions = 0

    def partition_of(self, letter: DeadLetter) -> int:
        if not self._partitions:
            metadata = self._reader.list_topics(self._topic, timeout=10)
            self._partitions = len(metadata.topics[self._topic].partitions)
        return letter.partition % self._partitions

    def end_offset(self, partition: int) -> int:
        _, high = self._reader.get_watermark_offsets(
            TopicPartition(self._topic, partition), timeout=10
        )
        return int(high)

    def published_since(self, partition: int, offset: int) -> set[tuple[int, int, int | None]]:
        """The sources of the records in DLQ ``partition`` from ``offset`` to its end now."""
        end = self.end_offset(partition)
        found: set[tuple[int, int, int | None]] = set()
        if offset >= end:
            return found
        self._reader.assign([TopicPartition(self._topic, partition, offset)])
        try:
            while True:
                records = self._reader.consume(500, timeout=5)
                if not records:
                    raise DeliveryError(f"DLQ partition {partition} unreadable below {end}")
                for record in records:
                    error = record.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        return found
                    if error is None:
                        found.add(_source(record.headers()))
                        if (record.offset() or 0) + 1 >= end:
                            return found
        finally:
            self._reader.unassign()

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Publish and wait for Kafka's acknowledgement of every letter."""
        if not letters:
            return
        for letter in letters:
            self._publisher.send(
                self._topic,
                letter.rejected.payload,
                letter.key,
                letter.headers(),
                partition=self.partition_of(letter),
            )
        await asyncio.to_thread(self._publisher.flush)
        for letter in letters:
            telemetry.EVENTS_REJECTED.labels(letter.rejected.rejection.reason.value).inc()
