"""The DLQ: rejected payloads, untouched, with the headers of CONTRACT §2 and §3.0.

A rejection from input partition p goes to DLQ partition p mod n, so that a worker taking
over an abandoned rejection can read that one partition to learn whether it was published.

Each letter's own delivery is waited for (``voicemon.publisher``). A letter Kafka refuses for
its size is sent again alone (a batch-mate may have made the batch too large), then as an
envelope: the first ``ENVELOPE_BYTES`` of the original with its sha256 and length in headers
(CONTRACT §3.3, docs/events.md). A letter refused for good even so (``PublishFailed.permanent``:
its size, an invalid record, no authorization, an unknown topic) is counted in
``voicemon_dlq_refused_total`` and logged, and settles like a published one: a permanent
refusal never pauses ingest. Only an outage (no answer in time, a broker down) raises, and
the caller retries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumers.letters import DeadLetter, Source
from voicemon import telemetry
from voicemon.kafka_client import confluent_logging
from voicemon.publisher import (
    DeliveryError,
    KafkaPublisher,
    Published,
    PublishFailed,
    outcomes,
)

log = logging.getLogger("voicemon.dlq")

DELIVERY_TIMEOUT_S = 30.0  # a letter unanswered this long is an outage: the batch is retried


def _source(headers: Any) -> Source:
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
             "enable.auto.commit": False, "enable.partition.eof": True, **(security or {}),
             **confluent_logging()}
        )  # fmt: skip
        self._partitions = 0
        self._in_flight: dict[Source, Future[Published]] = {}  # sends not answered yet

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

    def published_since(self, partition: int, offset: int) -> set[Source]:
        """The sources of the records in DLQ ``partition`` from ``offset`` to its end now."""
        end = self.end_offset(partition)
        found: set[Source] = set()
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
        """Publish the letters and return once each is acknowledged (in full or as an
        envelope) or refused for good (counted and logged); see the module docstring. Raises
        ``DeliveryError`` on an outage: a letter still in flight then is waited for by the
        retry, never sent a second time by this worker."""
        if not letters:
            return
        found = await self._deliver([(letter, False) for letter in letters])
        for index, letter in enumerate(letters):
            outcome = found[index]
            if isinstance(outcome, PublishFailed) and outcome.too_large:
                found[index] = await self._shrunk(letter)
        for letter, outcome in zip(letters, found, strict=True):
            reason = letter.rejected.rejection.reason.value
            if isinstance(outcome, PublishFailed):
                telemetry.DLQ_REFUSED.labels(reason).inc()
                log.error(
                    "DLQ letter of input partition %d offset %d (batch index %s, reason %s) "
                    "refused for good by %s, not retried: %s", letter.partition, letter.offset,
                    letter.rejected.batch_index, reason, self._topic, outcome.reason,
                )  # fmt: skip
            telemetry.EVENTS_REJECTED.labels(reason).inc()

    async def _shrunk(self, letter: DeadLetter) -> Published | PublishFailed:
        """A letter refused for its size: sent again alone, then as an envelope."""
        outcome = (await self._deliver([(letter, False)]))[0]
        if isinstance(outcome, PublishFailed) and outcome.too_large:
            outcome = (await self._deliver([(letter, True)]))[0]
            if isinstance(outcome, Published):
                telemetry.DLQ_ENVELOPES.labels(letter.rejected.rejection.reason.value).inc()
        return outcome

    async def _deliver(
        self, sends: Sequence[tuple[DeadLetter, bool]]
    ) -> list[Published | PublishFailed]:
        """Send each letter (as an envelope if its flag is set) unless a send of it is still
        in flight, and wait for their answers: a ``Published`` or a permanent
        ``PublishFailed`` each. Raise ``DeliveryError`` for an outage."""
        futures = [self._send_once(letter, as_envelope) for letter, as_envelope in sends]
        found = await outcomes(futures, DELIVERY_TIMEOUT_S)
        for (letter, _), future, outcome in zip(sends, futures, found, strict=True):
            if outcome is not None and self._in_flight.get(letter.source) is future:
                del self._in_flight[letter.source]
        settled: list[Published | PublishFailed] = []
        for outcome in found:
            if outcome is None:
                raise DeliveryError(
                    f"{self._topic}: a DLQ letter has no acknowledgement within "
                    f"{DELIVERY_TIMEOUT_S:g}s"
                )
            if isinstance(outcome, PublishFailed) and not outcome.permanent:
                raise outcome
            settled.append(outcome)
        return settled

    def _send_once(self, letter: DeadLetter, as_envelope: bool) -> Future[Published]:
        sending = self._in_flight.get(letter.source)
        if sending is not None and not sending.done():
            return sending
        value, headers = letter.envelope() if as_envelope else (letter.rejected.payload,
                                                                letter.headers())  # fmt: skip
        sending = self._publisher.send(
            self._topic, value, letter.key, headers, partition=self.partition_of(letter)
        )
        self._in_flight[letter.source] = sending
        return sending
