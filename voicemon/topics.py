"""The topics of CONTRACT §2: created or verified (``voicemon topics ensure``), and read-outs.

``ensure`` creates the topics that are missing with the partitions, replication and
``cleanup.policy`` they need, and reports drift on those that exist — fewer partitions, a
smaller replication factor, a directory that is not compacted — without changing them: an
operator decides what to do with a topic that holds data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from voicemon.settings import Settings

TIMEOUT_S = 30.0


class TopicsError(Exception):
    """The topics could not be listed or created. Operator action: check the broker and the
    client's ACLs (CreateTopics, DescribeConfigs)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    state: Literal["created", "ok", "drift"]
    detail: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics of CONTRACT §2 as the settings name them."""
    partitions, replication = settings.topic_partitions, settings.topic_replication
    return [
        TopicSpec(settings.events_topic, partitions, replication),
        TopicSpec(settings.dlq_topic, partitions, replication),
        TopicSpec(settings.snapshots_topic, partitions, replication),
        TopicSpec(settings.organizations_topic, 1, replication, {"cleanup.policy": "compact"}),
    ]


def drift(spec: TopicSpec, partitions: int, replication: int, config: dict[str, str]) -> str:
    """What differs between an existing topic and its spec, in words ('' if nothing; pure).
    More partitions or replicas than wanted are fine."""
    problems = []
    if partitions < spec.partitions:
        problems.append(f"{partitions} partition(s), wants {spec.partitions}")
    if replication < spec.replication:
        problems.append(f"replication factor {replication}, wants {spec.replication}")
    for name, wanted in spec.config.items():
        if config.get(name) != wanted:
            problems.append(f"{name}={config.get(name)}, wants {wanted}")
    return "; ".join(problems)


def ensure(
    bootstrap: str, specs: list[TopicSpec], security: Mapping[str, Any] | None = None
) -> list[TopicReport]:
    """Create the missing topics and verify the others; never changes an existing topic.
    ``security``: librdkafka security properties (``kafka_client.confluent_security``)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(security or {})})
    try:
        existing = admin.list_topics(timeout=TIMEOUT_S).topics
        missing = [s for s in specs if s.name not in existing]
        created = _create(admin, missing)
        present = [s for s in specs if s.name in existing]
        configs = _configs(admin, [s.name for s in present])
    except KafkaException as error:
        raise TopicsError(f"cannot list or create topics on {bootstrap}: {error}") from None
    reports = [TopicReport(name, "created") for name in created]
    for spec in present:
        metadata = existing[spec.name]
        replication = min((len(p.replicas) for p in metadata.partitions.values()), default=0)
        found = drift(spec, len(metadata.partitions), replication, configs[spec.name])
        reports.append(TopicReport(spec.name, "drift" if found else "ok", found))
    order = [s.name for s in specs]
    return sorted(reports, key=lambda report: order.index(report.name))


def _create(admin: AdminClient, specs: list[TopicSpec]) -> list[str]:
    if not specs:
        return []
    new = [NewTopic(s.name, s.partitions, s.replication, config=s.config) for s in specs]
    created = []
    for name, future in admin.create_topics(new).items():
        try:
            future.result(timeout=TIMEOUT_S)
            created.append(name)
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise
    return created


def _configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource("topic", name) for name in names]
    found: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources).items():
        entries = future.result(timeout=TIMEOUT_S)
        found[resource.name] = {key: str(entry.value) for key, entry in entries.items()}
    return found


def message_count(bootstrap: str, topic: str, security: Mapping[str, Any] | None = None) -> int:
    """Messages currently held by ``topic`` (high minus low watermark, summed)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "voicemon-readout", **(security or {})}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def max_message_bytes(bootstrap: str, topic: str, security: Mapping[str, Any] | None = None) -> int:
    """The largest record batch ``topic`` takes (its ``max.message.bytes``, as the broker
    resolves it). Raises TopicsError when it cannot be read."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(security or {})})
    try:
        return int(_configs(admin, [topic])[topic]["max.message.bytes"])
    except (KafkaException, KeyError) as error:
        raise TopicsError(f"cannot read max.message.bytes of topic {topic}: {error}") from None
