"""The topics of CONTRACT §2: created or verified (``voicemon topics ensure``), and read-outs.

``ensure`` creates the topics that are missing with the partitions, replication and
``cleanup.policy`` they need, and reports drift on those that exist — fewer partitions, a
smaller replication factor, a directory that is not compacted — without changing them: an
operator decides what to do with a topic that holds data. Two settings it sets on existing
topics too, since changing them is safe on a topic that holds data (CONTRACT §2): the events
topic keeps the broker's log-append time, and the DLQ's ``max.message.bytes`` exceeds the
events topic's effective one (its own or the broker's default) by at least
``DLQ_HEADROOM_BYTES``, so that every letter fits. ``broken_rules`` is the worker's check of
these two rules at start.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from voicemon.kafka_client import confluent_logging
from voicemon.settings import Settings

TIMEOUT_S = 30.0
DLQ_HEADROOM_BYTES = 65_536  # the DLQ's size limit exceeds the events topic's by this much
MAX_BYTES = "max.message.bytes"
TIMESTAMP_TYPE = "message.timestamp.type"
LOG_APPEND_TIME = "LogAppendTime"


class TopicsError(Exception):
    """The topics could not be listed or created. Operator action: check the broker and the
    client's ACLs (CreateTopics, DescribeConfigs, AlterConfigs)."""


class TopicRulesBroken(Exception):
    """The events or DLQ topic breaks a rule of CONTRACT §2 (one sentence saying which).
    Operator action: run ``voicemon topics ensure``."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)  # at creation; drift is reported
    enforced: dict[str, str] = field(default_factory=dict)  # set on an existing topic too
    headroom_over: str | None = None  # max.message.bytes: this topic's + DLQ_HEADROOM_BYTES


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    state: Literal["created", "ok", "updated", "drift"]
    detail: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics of CONTRACT §2 as the settings name them."""
    partitions, replication = settings.topic_partitions, settings.topic_replication
    return [
        TopicSpec(
            settings.events_topic,
            partitions,
            replication,
            enforced={TIMESTAMP_TYPE: LOG_APPEND_TIME},
        ),
        TopicSpec(settings.dlq_topic, partitions, replication, headroom_over=settings.events_topic),
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


def _listing(admin: AdminClient, name: str) -> Any:
    """The broker's topics once ``name`` is among them: a topic another client just created
    may be missing from the metadata for a moment."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        topics = admin.list_topics(timeout=TIMEOUT_S).topics
        if name in topics or time.monotonic() > deadline:
            if name not in topics:
                raise TopicsError(f"topic {name} exists but the broker does not list it")
            return topics
        time.sleep(0.2)


def ensure(
    bootstrap: str, specs: list[TopicSpec], security: Mapping[str, Any] | None = None
) -> list[TopicReport]:
    """Create the missing topics and verify the others, setting their ``enforced`` settings
    and size headroom (in the order of ``specs``: a topic another's headroom is measured on
    comes first). ``security``: librdkafka security properties
    (``kafka_client.confluent_security``)."""
    admin = AdminClient(_client_config(bootstrap, security))
    reports: dict[str, TopicReport] = {}
    try:
        existing = admin.list_topics(timeout=TIMEOUT_S).topics
        for spec in specs:
            wanted = {**spec.enforced, **_headroom(admin, spec)}
            if spec.name not in existing:
                if _create(admin, spec, wanted):
                    reports[spec.name] = TopicReport(spec.name, "created")
                    continue
                existing = _listing(admin, spec.name)  # created meanwhile by someone else
            reports[spec.name] = _verify(admin, spec, existing[spec.name], wanted)
    except KafkaException as error:
        raise TopicsError(
            f"cannot list, create or configure topics on {bootstrap}: {error}"
        ) from None
    return [reports[spec.name] for spec in specs]


def _headroom(admin: AdminClient, spec: TopicSpec) -> dict[str, str]:
    """The DLQ's ``max.message.bytes``: the events topic's effective limit plus headroom."""
    if spec.headroom_over is None:
        return {}
    limit = int(_configs(admin, [spec.headroom_over])[spec.headroom_over][MAX_BYTES])
    return {MAX_BYTES: str(limit + DLQ_HEADROOM_BYTES)}


def _create(admin: AdminClient, spec: TopicSpec, wanted: dict[str, str]) -> bool:
    """Create one topic; False if another client created it meanwhile."""
    new = NewTopic(spec.name, spec.partitions, spec.replication, config={**spec.config, **wanted})
    try:
        admin.create_topics([new])[spec.name].result(timeout=TIMEOUT_S)
        return True
    except KafkaException as error:
        if "TOPIC_ALREADY_EXISTS" not in str(error):
            raise
        return False


def _verify(
    admin: AdminClient, spec: TopicSpec, metadata: Any, wanted: dict[str, str]
) -> TopicReport:
    """An existing topic: its ``wanted`` settings set where they differ (a size limit only
    ever raised), drift reported."""
    config = _configs(admin, [spec.name])[spec.name]
    changes = {name: value for name, value in wanted.items() if _short(name, config, value)}
    if changes:
        entries = [ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                   for name, value in changes.items()]  # fmt: skip
        resource = ConfigResource("topic", spec.name, incremental_configs=entries)
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=TIMEOUT_S)
    replication = min((len(p.replicas) for p in metadata.partitions.values()), default=0)
    found = drift(spec, len(metadata.partitions), replication, config)
    done = ", ".join(f"set {name}={value} (was {config.get(name)})"
                     for name, value in changes.items())  # fmt: skip
    detail = "; ".join(part for part in (found, done) if part)
    return TopicReport(spec.name, "drift" if found else "updated" if changes else "ok", detail)


def _short(name: str, config: Mapping[str, str], wanted: str) -> bool:
    """Whether a topic's setting ``name`` must change to meet ``wanted`` (a size limit
    larger than wanted is kept)."""
    if name == MAX_BYTES:
        return int(config.get(name) or 0) < int(wanted)
    return config.get(name) != wanted


def broken_rules(
    bootstrap: str, events_topic: str, dlq_topic: str, security: Mapping[str, Any] | None = None
) -> str:
    """What breaks the events and DLQ topics' rules of CONTRACT §2, in words ('' if
    nothing): both exist, the events topic keeps log-append time, the DLQ's size limit
    exceeds the events topic's by at least ``DLQ_HEADROOM_BYTES``."""
    admin = AdminClient(_client_config(bootstrap, security))
    try:
        existing = admin.list_topics(timeout=TIMEOUT_S).topics
        missing = [name for name in (events_topic, dlq_topic) if name not in existing]
        if missing:
            return f"topic {' and '.join(missing)} does not exist"
        configs = _configs(admin, [events_topic, dlq_topic])
    except KafkaException as error:
        raise TopicsError(f"cannot read the topics' settings on {bootstrap}: {error}") from None
    return rule_problems(events_topic, configs[events_topic], dlq_topic, configs[dlq_topic])


def rule_problems(
    events_topic: str, events: Mapping[str, str], dlq_topic: str, dlq: Mapping[str, str]
) -> str:
    """``broken_rules`` on the two topics' effective settings (pure)."""
    problems = []
    if events.get(TIMESTAMP_TYPE) != LOG_APPEND_TIME:
        problems.append(
            f"{events_topic} has {TIMESTAMP_TYPE}={events.get(TIMESTAMP_TYPE)}, not "
            f"{LOG_APPEND_TIME}"
        )
    limit, dlq_limit = int(events.get(MAX_BYTES) or 0), int(dlq.get(MAX_BYTES) or 0)
    if dlq_limit < limit + DLQ_HEADROOM_BYTES:
        problems.append(
            f"the DLQ topic {dlq_topic} has {MAX_BYTES}={dlq_limit}, under {events_topic}'s "
            f"{limit} plus {DLQ_HEADROOM_BYTES} (so a rejected message may not fit)"
        )
    return " and ".join(problems)


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
    consumer = Consumer({**_client_config(bootstrap, security), "group.id": "voicemon-readout"})
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
    admin = AdminClient(_client_config(bootstrap, security))
    try:
        return int(_configs(admin, [topic])[topic]["max.message.bytes"])
    except (KafkaException, KeyError) as error:
        raise TopicsError(f"cannot read max.message.bytes of topic {topic}: {error}") from None


def _client_config(bootstrap: str, security: Mapping[str, Any] | None) -> dict[str, Any]:
    """A librdkafka client's settings: the servers, the security, the logger (a worker's
    log stays one JSON object per line)."""
    return {"bootstrap.servers": bootstrap, **(security or {}), **confluent_logging()}
