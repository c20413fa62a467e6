"""The Faust app of the voicemon worker and its topics, built from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from voicemon.kafka_client import faust_brokers, faust_credentials
from voicemon.settings import Settings


@dataclass(frozen=True, slots=True)
class WorkerApp:
    """The Faust app with the two topics it consumes."""

    app: faust.App
    events_topic: Any
    organizations_topic: Any


def build_app(settings: Settings) -> WorkerApp:
    app = faust.App(
        settings.worker_group,
        broker=faust_brokers(settings),
        broker_credentials=faust_credentials(settings),  # TLS and SASL (VOICEMON_KAFKA_*)
        autodiscover=False,
        datadir=settings.worker_data_dir,
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # A crashed worker's partitions move after the session timeout; Faust's default (60 s)
        # stalls them a minute, so it is a setting.
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_seconds,
        broker_commit_interval=settings.kafka_commit_interval_seconds,
        # A worker that joins its group while the broker restarts sees its topics missing and
        # is assigned nothing until its next metadata refresh: aiokafka's default is 5 min.
        consumer_metadata_max_age_ms=30_000,
        # Bounded buffering: with a dependency down the agent stops taking, the buffer fills and
        # Faust stops fetching instead of holding more messages in memory.
        stream_buffer_maxsize=settings.batch_max_messages,
        web_bind=settings.worker_web_bind,
        web_port=settings.worker_web_port,
        web_enabled=True,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}  # fmt: skip
    events = app.topic(settings.events_topic, partitions=settings.topic_partitions, **raw)
    organizations = app.topic(settings.organizations_topic, partitions=1, **raw)
    return WorkerApp(app, events, organizations)
