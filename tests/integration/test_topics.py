"""``voicemon topics ensure`` against the real broker: creates, verifies, reports drift."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from typer.testing import CliRunner

from runtime.cli import app
from runtime.cli.common import settings as cli_settings
from voicemon import topics
from voicemon.devtools.localstack import LocalStack, StackError
from voicemon.settings import Settings


def config_of(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource("topic", topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: str(entry.value) for name, entry in entries.items()}


def test_topics_are_created_then_verified_and_drift_is_reported_untouched(
    stack: Settings,
) -> None:
    prefix = f"topics-{uuid.uuid4().hex[:8]}"
    settings = stack.model_copy(update={
        "events_topic": f"{prefix}.events", "dlq_topic": f"{prefix}.dlq",
        "snapshots_topic": f"{prefix}.snapshots", "organizations_topic": f"{prefix}.orgs",
    })  # fmt: skip
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    # Two topics made by hand, wrongly: too few partitions, and a directory not compacted.
    wrong = [NewTopic(settings.dlq_topic, 2, 1), NewTopic(settings.organizations_topic, 1, 1)]
    for future in admin.create_topics(wrong).values():
        future.result(timeout=30)

    specs = topics.topic_specs(settings)
    first = {r.name: (r.state, r.detail) for r in topics.ensure(settings.kafka_bootstrap, specs)}
    limit = int(config_of(admin, settings.events_topic)["max.message.bytes"])  # the default
    assert first == {
        settings.events_topic: ("created", ""),
        settings.dlq_topic: ("drift", f"2 partition(s), wants 4; set max.message.bytes="
                                      f"{limit + 65_536} (was {limit})"),
        settings.snapshots_topic: ("created", ""),
        settings.organizations_topic: ("drift", "cleanup.policy=delete, wants compact"),
    }  # fmt: skip
    metadata = admin.list_topics(timeout=10).topics
    assert len(metadata[settings.events_topic].partitions) == 4
    assert len(metadata[settings.dlq_topic].partitions) == 2  # drift reported, not changed
    assert config_of(admin, settings.events_topic)["message.timestamp.type"] == "LogAppendTime"
    assert config_of(admin, settings.dlq_topic)["max.message.bytes"] == str(limit + 65_536)
    second = topics.ensure(settings.kafka_bootstrap, specs)
    assert [r.state for r in second] == ["ok", "drift", "ok", "drift"]
    assert second[1].detail == "2 partition(s), wants 4"  # the size is set once

    env = {"VOICEMON_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "VOICEMON_EVENTS_TOPIC": settings.events_topic, "VOICEMON_DLQ_TOPIC": settings.dlq_topic,
           "VOICEMON_SNAPSHOTS_TOPIC": settings.snapshots_topic,
           "VOICEMON_ORGANIZATIONS_TOPIC": settings.organizations_topic}  # fmt: skip
    cli_settings.cache_clear()  # the command reads the environment afresh
    try:
        result = CliRunner().invoke(app, ["topics", "ensure", "--json"], env=env)
    finally:
        cli_settings.cache_clear()
    assert result.exit_code == 1, result.output  # drift fails the command
    assert '"state":"drift"' in result.output and "wants compact" in result.output


def test_ensure_sets_log_append_time_and_the_dlq_headroom_on_existing_topics(
    stack: Settings,
) -> None:
    """An events topic keeping create time with its own 300,000-byte limit, and a DLQ one
    byte short of 64 KiB over it: ensure sets both rules (CONTRACT §2) and leaves a DLQ
    limit that already exceeds the rule alone; the worker's check agrees at each step."""
    prefix = f"rules-{uuid.uuid4().hex[:8]}"
    settings = stack.model_copy(update={
        "events_topic": f"{prefix}.events", "dlq_topic": f"{prefix}.dlq",
        "snapshots_topic": f"{prefix}.snapshots", "organizations_topic": f"{prefix}.orgs",
    })  # fmt: skip
    bootstrap = settings.kafka_bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    made = [NewTopic(settings.events_topic, 4, 1, config={"max.message.bytes": "300000"}),
            NewTopic(settings.dlq_topic, 4, 1, config={"max.message.bytes": "365535"})]  # fmt: skip
    for future in admin.create_topics(made).values():
        future.result(timeout=30)
    broken = topics.broken_rules(bootstrap, settings.events_topic, settings.dlq_topic)
    assert "message.timestamp.type=CreateTime, not LogAppendTime" in broken
    assert "max.message.bytes=365535, under" in broken

    reports = topics.ensure(bootstrap, topics.topic_specs(settings))
    assert [(r.state, r.detail) for r in reports[:2]] == [
        ("updated", "set message.timestamp.type=LogAppendTime (was CreateTime)"),
        ("updated", "set max.message.bytes=365536 (was 365535)"),
    ]
    assert topics.broken_rules(bootstrap, settings.events_topic, settings.dlq_topic) == ""

    entry = ConfigEntry("max.message.bytes", "900000",
                        incremental_operation=AlterConfigOpType.SET)  # fmt: skip
    resource = ConfigResource("topic", settings.dlq_topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    # The controller acknowledges the change before every broker serves it: wait until the
    # broker describes it, so that ensure reads the larger limit (it once read the old one
    # under load and the check below saw 365536).
    deadline = time.monotonic() + 30
    while config_of(admin, settings.dlq_topic)["max.message.bytes"] != "900000":
        assert time.monotonic() < deadline, "the broker never served the altered limit"
        time.sleep(0.2)
    again = topics.ensure(bootstrap, topics.topic_specs(settings))
    assert [r.state for r in again] == ["ok", "ok", "ok", "ok"]  # a larger limit is kept
    assert config_of(admin, settings.dlq_topic)["max.message.bytes"] == "900000"


def test_the_local_stack_takes_topics_with_more_partitions_than_configured(
    stack: Settings, tmp_path: Path
) -> None:
    prefix = f"wider-{uuid.uuid4().hex[:8]}"
    names = {"events_topic": f"{prefix}.events", "dlq_topic": f"{prefix}.dlq",
             "snapshots_topic": f"{prefix}.snapshots",
             "organizations_topic": f"{prefix}.orgs"}  # fmt: skip
    LocalStack(stack.model_copy(update={**names, "topic_partitions": 6}), tmp_path).ensure_topics()
    narrower = stack.model_copy(update={**names, "topic_partitions": 4})
    assert [r.state for r in topics.ensure(narrower.kafka_bootstrap,
                                           topics.topic_specs(narrower))] == ["ok"] * 4  # fmt: skip
    started = time.monotonic()
    LocalStack(narrower, tmp_path).ensure_topics(timeout_s=20)  # was: 60 s, then a failure
    assert time.monotonic() - started < 10
    wider = stack.model_copy(update={**names, "topic_partitions": 7})
    with pytest.raises(StackError):  # fewer than configured: drift, reported at the deadline
        LocalStack(wider, tmp_path).ensure_topics(timeout_s=3)
