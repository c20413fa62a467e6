"""The Faust app of the voicemon worker, and nothing else."""

from __future__ import annotations

import faust

from voicemon.settings import get_settings

settings = get_settings()

app = faust.App(
    settings.worker_group,
    broker=f"kafka://{settings.kafka_bootstrap}",
    autodiscover=False,
    datadir=settings.worker_data_dir,
    topic_partitions=settings.topic_partitions,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    # Bounded buffering: with a dependency down the agent stops taking, the buffer fills and
    # Faust stops fetching instead of holding more messages in memory.
    stream_buffer_maxsize=settings.batch_max_messages,
    web_bind=settings.worker_web_bind,
    web_port=settings.worker_web_port,
    web_enabled=True,
)

events_topic = app.topic(
    settings.events_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
)

organizations_topic = app.topic(
    settings.organizations_topic,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=1,
)
