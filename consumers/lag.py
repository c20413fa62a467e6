"""Consumer lag from the broker's view (CONTRACT §8): the consumer group's committed offsets
against the end offsets of the events topic's partitions.

Every worker measures it on a timer with its own admin client, whatever partitions it holds
and whether or not it can ingest: the lag stays exported while Redis or ClickHouse pauses
ingest and by a worker restarted during such an outage (it needs the broker alone). Every
worker of a group reports the same numbers, so dashboards and rules take ``max by
(consumer_group, partition)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

Config = Mapping[str, str | int | float | bool]


class LagUnavailable(Exception):
    """The broker could not be asked for the group's offsets. Operator action: check that the
    broker is reachable and that the client may describe the group and the topic."""


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition of the events topic as the broker sees it."""

    partition: int
    start: int  # the earliest offset still retained
    end: int  # the offset the next appended message will get
    committed: int | None  # the group's committed offset; None if it never committed there

    @property
    def lag(self) -> int:
        """Messages the group has still to consume (pure): from its committed offset, or from
        the earliest retained one when it never committed or its offset was deleted (the
        worker starts there, ``auto.offset.reset=earliest``)."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(0, self.end - position)


def offsets_by_partition(
    starts: dict[int, int], ends: dict[int, int], committed: dict[int, int]
) -> list[PartitionOffsets]:
    """The broker's three answers combined per partition (pure); a negative committed offset
    is none."""
    return [
        PartitionOffsets(p, starts[p], ends[p], committed[p] if committed.get(p, -1) >= 0 else None)
        for p in sorted(ends)
    ]


class BrokerLag:
    """Asks the broker for a group's committed offsets and the events topic's start and end
    offsets (blocking; call it in a thread). One admin client, opened on first use."""

    def __init__(self, config: Config, group: str, topic: str, timeout_s: float = 10):
        self.config = config
        self.group = group
        self.topic = topic
        self.timeout_s = timeout_s
        self._admin: AdminClient | None = None

    def measure(self) -> list[PartitionOffsets]:
        try:
            return self._measure()
        except (KafkaException, TimeoutError) as error:  # a broker restarting: no answer yet
            raise LagUnavailable(f"consumer lag of group {self.group}: {error!r}") from None

    def _measure(self) -> list[PartitionOffsets]:
        if self._admin is None:
            self._admin = AdminClient(dict(self.config))
        admin = self._admin
        metadata = admin.list_topics(self.topic, timeout=self.timeout_s).topics[self.topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        partitions = [TopicPartition(self.topic, p) for p in sorted(metadata.partitions)]
        request = [ConsumerGroupTopicPartitions(self.group, partitions)]
        answer = admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
        committed = {
            tp.partition: tp.offset
            for tp in answer[self.group].result(timeout=self.timeout_s).topic_partitions
        }
        return offsets_by_partition(
            self._offsets(partitions, OffsetSpec.earliest()),  # type: ignore[no-untyped-call]
            self._offsets(partitions, OffsetSpec.latest()),  # type: ignore[no-untyped-call]
            committed,
        )

    def _offsets(self, partitions: list[TopicPartition], spec: Any) -> dict[int, int]:
        assert self._admin is not None
        answer = self._admin.list_offsets(
            {tp: spec for tp in partitions}, request_timeout=self.timeout_s
        )
        return {tp.partition: future.result(timeout=self.timeout_s).offset
                for tp, future in answer.items()}  # fmt: skip
