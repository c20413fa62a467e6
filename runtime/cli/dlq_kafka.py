"""The DLQ tools' Kafka I/O: the DLQ topic read up to its end as it is now (or followed), and
replayed payloads published to the input topic. What is done with the records is pure, in
``runtime.cli.dlq_records`` and ``runtime.cli.dlq_fixups``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import wait
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from runtime.cli.dlq_fixups import ReplayStep, replay_headers
from runtime.cli.dlq_records import DeadLetterRecord, dead_letter
from voicemon.kafka_client import confluent_config, confluent_logging, confluent_security
from voicemon.publisher import KafkaPublisher
from voicemon.settings import Settings

TIMEOUT_S = 10.0
REPLAY_TIMEOUT_S = 30.0  # the whole replay's records acknowledged within this
STALLED_S = 30.0  # no record for this long while the end is not reached: the read failed
Watermarks = dict[int, tuple[int, int]]  # partition -> (low, high)


class DlqKafkaError(Exception):
    """Kafka could not be read or written; the message says what to check."""


class DlqReader:
    """Reads one DLQ topic without joining a consumer group (nothing is committed), with the
    settings' broker and Kafka security."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.bootstrap, self.topic = settings.kafka_bootstrap, topic
        self._consumer = Consumer(
            confluent_config(settings, {
                "group.id": "voicemon-dlq-tools", "enable.auto.commit": False,
                "enable.partition.eof": True, "allow.auto.create.topics": False,
                "log_level": 2})  # connection failures are raised as one sentence, not logged
        )  # fmt: skip

    def __enter__(self) -> DlqReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._consumer.close()

    def watermarks(self) -> Watermarks:
        """The low and high offsets of every partition now."""
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=TIMEOUT_S)
            found = metadata.topics[self.topic]
            if found.error is not None:
                raise DlqKafkaError(
                    f"the DLQ topic {self.topic} cannot be read ({found.error.str()}); "
                    "run voicemon topics ensure or check VOICEMON_DLQ_TOPIC"
                )
            return {
                partition: self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=TIMEOUT_S
                )
                for partition in sorted(found.partitions)
            }
        except KafkaException as error:
            raise self._unreachable(error) from None

    def offsets_at(self, at_ms: int, marks: Mapping[int, tuple[int, int]]) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is at or after ``at_ms``."""
        wanted = [TopicPartition(self.topic, partition, at_ms) for partition in marks]
        try:
            found = self._consumer.offsets_for_times(wanted, timeout=TIMEOUT_S)
        except KafkaException as error:
            raise self._unreachable(error) from None
        return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1]
                for tp in found}  # fmt: skip

    def read(
        self, starts: Mapping[int, int], ends: Mapping[int, int] | None
    ) -> Iterator[DeadLetterRecord]:
        """Records from ``starts`` up to (not including) ``ends``; with ``ends`` None, from
        ``starts`` on, forever (following the topic)."""
        follow = ends is None
        pending = {p for p, start in starts.items() if follow or start < (ends or {})[p]}
        if not pending:
            return
        self._consumer.assign([TopicPartition(self.topic, p, starts[p]) for p in pending])
        progressed = time.monotonic()
        try:
            while pending:
                records = self._consume()
                if records:
                    progressed = time.monotonic()
                elif not follow and time.monotonic() - progressed > STALLED_S:
                    raise DlqKafkaError(
                        f"the DLQ topic {self.topic} stopped answering before its end "
                        f"(partitions {sorted(pending)}); check the broker"
                    )
                for record in records:
                    partition, offset = record.partition(), record.offset()
                    error = record.error()
                    if error is not None and error.code() == KafkaError._PARTITION_EOF:
                        if not follow:
                            pending.discard(partition)
                        continue
                    if error is not None:
                        raise DlqKafkaError(f"reading {self.topic} failed: {error.str()}")
                    if ends is not None and offset >= ends[partition]:
                        pending.discard(partition)
                        continue
                    kind, at = record.timestamp()
                    yield dead_letter(partition, offset,
                                      None if kind == TIMESTAMP_NOT_AVAILABLE else at,
                                      record.key(), record.value(), record.headers())  # fmt: skip
                    if ends is not None and offset + 1 >= ends[partition]:
                        pending.discard(partition)
        finally:
            self._consumer.unassign()

    def _consume(self) -> list[Any]:
        try:
            return list(self._consumer.consume(500, timeout=0.5))
        except KafkaException as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: KafkaException) -> DlqKafkaError:
        return DlqKafkaError(
            f"cannot read {self.topic} from Kafka at {self.bootstrap} ({_describe(error)}); "
            "start the broker or check VOICEMON_KAFKA_BOOTSTRAP"
        )


def _describe(error: KafkaException) -> str:
    reason = error.args[0] if error.args else error
    return str(reason.str()) if isinstance(reason, KafkaError) else str(reason)


def publish_replay(settings: Settings, topic: str, steps: Sequence[ReplayStep]) -> int:
    """Send the payload of every step marked to send to ``topic``, under its original key,
    and wait until Kafka acknowledged each of them; the number sent."""
    bootstrap = settings.kafka_bootstrap
    publisher = KafkaPublisher(bootstrap, **confluent_security(settings), **confluent_logging())
    chosen = [step for step in steps if step.send]
    sent = [publisher.send(topic, step.value, step.record.key, replay_headers(step.record))
            for step in chosen]  # fmt: skip
    done, unanswered = wait(sent, timeout=REPLAY_TIMEOUT_S)
    publisher.close(0)
    failures = [str(error) for error in (future.exception() for future in done) if error]
    if failures or unanswered:
        first = f", the first: {failures[0]}" if failures else ""
        raise DlqKafkaError(
            f"Kafka at {bootstrap} did not acknowledge {len(failures) + len(unanswered)} of the "
            f"{len(sent)} record(s) replayed to {topic} ({len(failures)} refused{first}; "
            f"{len(unanswered)} unanswered after {REPLAY_TIMEOUT_S:g}s); check the broker and "
            "the topic, then replay again (a replay is safe to repeat)"
        )
    return len(chosen)
