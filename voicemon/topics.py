"""Small Kafka read-outs for operators and tests."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


def message_count(bootstrap: str, topic: str) -> int:
    """Messages currently held by ``topic`` (high minus low watermark, summed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "voicemon-readout"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()
