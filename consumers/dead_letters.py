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
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from consumers.letters import DeadLetter, SentLetters, Source, record_digest
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
READ_IDLE_S = 600.0  # a DLQ partition read by ``holding`` is kept this long after its last use
READ_WAIT_S = 0.2  # one wait of a read for records
READ_TIMEOUT_S = 5.0  # a read that gets no record this long is an outage
SEAL_EVERY = 65_536  # a read sorts the keys it has gathered every this many records


def _named(headers: Any) -> dict[str, str]:
    """A DLQ record's headers by name."""
    return {name: bytes(value).decode(errors="replace") for name, value in headers or []
            if value is not None}  # fmt: skip


def _source(named: Mapping[str, str]) -> Source | None:
    """The (source partition, source offset, batch index) a DLQ record's headers name; None
    for a record without them (not voicemon's)."""
    try:
        batch_index = named.get("voicemon-batch-index")
        return (
            int(named["voicemon-source-partition"]),
            int(named["voicemon-source-offset"]),
            None if batch_index is None else int(batch_index),
        )
    except (KeyError, ValueError):
        return None


@dataclass(slots=True)
class _Read:
    """What a DLQ partition held when last read (``holding``)."""

    next_offset: int
    letters: SentLetters
    used: float  # time.monotonic() of its last use


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
        # The reader, and what it read, serve one thread at a time: a chunk is counted while
        # the one before is stored, each in a thread of its own.
        self._reading = threading.RLock()
        self._partitions = 0
        self._in_flight: dict[Source, Future[Published]] = {}  # sends not answered yet
        self._read: dict[int, _Read] = {}  # DLQ partitions read by ``holding``

    def partition_of(self, letter: DeadLetter) -> int:
        return self._partition_of(letter.partition)

    def _partition_of(self, source_partition: int) -> int:
        if not self._partitions:
            with self._reading:
                metadata = self._reader.list_topics(self._topic, timeout=10)
            self._partitions = len(metadata.topics[self._topic].partitions)
        return source_partition % self._partitions

    def end_offset(self, partition: int) -> int:
        with self._reading:
            _, high = self._reader.get_watermark_offsets(
                TopicPartition(self._topic, partition), timeout=10
            )
        return int(high)

    def published_since(self, partition: int, offset: int) -> set[Source]:
        """The sources of the records in DLQ ``partition`` from ``offset`` to its end now."""
        with self._reading:
            records = self._records(partition, offset, self.end_offset(partition))
            sources = {_source(_named(headers)) for _, _, headers, _ in records}
        return {source for source in sources if source is not None}

    def holding(self, wanted: Mapping[Source, bytes], since_ms: int) -> set[Source]:
        """Which ``wanted`` sources have a letter in the DLQ whose original has the digest
        given (``letters.payload_digest``), among the letters appended since ``since_ms``
        (CONTRACT §3.2: the DLQ record of a first decision). Each DLQ partition is read once,
        then from where the last read ended, and forgotten ``READ_IDLE_S`` after its last
        use: a replay asks chunk after chunk."""
        by_partition: dict[int, list[Source]] = defaultdict(list)
        for source in wanted:
            by_partition[self._partition_of(source[0])].append(source)
        found: set[Source] = set()
        with self._reading:
            now = time.monotonic()
            self._read = {p: read for p, read in self._read.items()
                          if now - read.used <= READ_IDLE_S}  # fmt: skip
            for partition, sources in by_partition.items():
                letters = self._read_on(partition, since_ms, now).letters
                found.update(s for s in sources if letters.holds(s, wanted[s]))
        return found

    def _read_on(self, partition: int, since_ms: int, now: float) -> _Read:
        """DLQ ``partition`` read to its end now: from where the last read ended, or if it
        was not read, from ``since_ms``. A failed read keeps nothing it did not finish."""
        end = self.end_offset(partition)
        read = self._read.get(partition)
        if read is None or read.next_offset > end:  # not read, or the topic was recreated
            read = _Read(self._offset_at(partition, since_ms, end), SentLetters(), now)
            self._read[partition] = read
        try:
            for offset, at_ms, headers, value in self._records(partition, read.next_offset, end):
                named = _named(headers)
                source = _source(named)
                if source is not None:
                    read.letters.add(source, record_digest(named, value), at_ms)
                read.next_offset = offset + 1
                if read.next_offset % SEAL_EVERY == 0:
                    read.letters.seal()
        finally:
            read.letters.seal()
        read.letters.forget_before(since_ms)
        read.used = now
        return read

    def _offset_at(self, partition: int, since_ms: int, end: int) -> int:
        """The first offset of DLQ ``partition`` appended at or after ``since_ms`` (its
        ``end`` if none was)."""
        asked = TopicPartition(self._topic, partition, since_ms)
        (found,) = self._reader.offsets_for_times([asked], timeout=10)
        if found.error is not None or found.offset > end:  # the asked time left in place
            raise DeliveryError(f"DLQ partition {partition}: no offset for a time: {found.error}")
        return int(found.offset) if found.offset >= 0 else end

    def _records(
        self, partition: int, offset: int, end: int
    ) -> Iterator[tuple[int, int, Any, bytes | None]]:
        """The offset, time, headers and value of each record of DLQ ``partition`` from
        ``offset`` up to ``end``, in offset order. A gap (a record compacted away, a
        transaction's marker or aborted records) is skipped."""
        if offset >= end:
            return
        where = TopicPartition(self._topic, partition, offset)
        self._reader.assign([where])
        try:
            waiting_since = time.monotonic()
            while offset < end:  # ask for no more than are left: consume waits for as many
                records = self._reader.consume(min(500, end - offset), timeout=READ_WAIT_S)
                for record in records:
                    error = record.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        return
                    if error is None:
                        offset = (record.offset() or 0) + 1
                        yield offset - 1, record.timestamp()[1], record.headers(), record.value()
                if records:
                    waiting_since = time.monotonic()
                    continue
                (where,) = self._reader.position([where])
                if where.offset >= end:  # nothing readable left below the end
                    return
                if time.monotonic() - waiting_since > READ_TIMEOUT_S:
                    raise DeliveryError(f"DLQ partition {partition} unreadable below {end}")
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
