"""``voicemon topics ensure`` against the real broker: creates, verifies, reports drift."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from runtime.cli import app
from runtime.cli.common import settings as cli_settings
from voicemon import topics
from voicemon.settings import Settings


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
    assert first == {
        settings.events_topic: ("created", ""),
        settings.dlq_topic: ("drift", "2 partition(s), wants 4"),
        settings.snapshots_topic: ("created", ""),
        settings.organizations_topic: ("drift", "cleanup.policy=delete, wants compact"),
    }
    metadata = admin.list_topics(timeout=10).topics
    assert len(metadata[settings.events_topic].partitions) == 4
    assert len(metadata[settings.dlq_topic].partitions) == 2  # drift reported, not changed
    second = topics.ensure(settings.kafka_bootstrap, specs)
    assert [r.state for r in second] == ["ok", "drift", "ok", "drift"]

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
