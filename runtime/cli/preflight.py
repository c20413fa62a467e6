"""Quick checks a command makes before it leans on Kafka or Redis, and the CLI's Redis client.

Without them an outage surfaces late and long: librdkafka waits out its metadata timeout
(10 s and more), a producer buffers for minutes, a Redis connect to a silent host waits for
the operating system. The Kafka check is ``voicemon.kafka_access`` with the settings' Kafka
security: a stopped broker is recognised in about half a second, a refused login or TLS
handshake as soon as the broker says so, a silent broker within ``KAFKA_TIMEOUT_S``;
``runtime.cli.errors`` turns what they raise into one sentence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicemon import kafka_access, topics
from voicemon.kafka_access import KafkaAccessError, KafkaUnreachable
from voicemon.kafka_access import probe as require_kafka
from voicemon.kafka_client import confluent_security
from voicemon.settings import Settings

if TYPE_CHECKING:
    from voicemon.redis_client import SyncRedis

__all__ = ["KafkaAccessError", "KafkaUnreachable", "check_kafka", "check_topics",
           "redis_client", "require_kafka", "require_redis"]  # fmt: skip

KAFKA_TIMEOUT_S = kafka_access.TIMEOUT_S
REDIS_CONNECT_TIMEOUT_S = 3.0
REDIS_TIMEOUT_S = 10.0


def check_kafka(config: Settings) -> None:
    """Return once Kafka answers with the settings' broker and security; raise
    ``KafkaAccessError`` if it refuses the login or the TLS handshake, ``KafkaUnreachable``
    if no broker answers (``require_kafka(bootstrap, confluent_security(settings))``)."""
    kafka_access.check(config, KAFKA_TIMEOUT_S)


def check_topics(config: Settings) -> None:
    """Raise ``TopicRulesBroken`` (one sentence) unless the events and DLQ topics keep the
    rules of CONTRACT §2 (``voicemon.topics.broken_rules``): a worker does not start on them."""
    problems = topics.broken_rules(
        config.kafka_bootstrap, config.events_topic, config.dlq_topic, confluent_security(config)
    )
    if problems:
        raise topics.TopicRulesBroken(
            f"the worker will not start: {problems}; run voicemon topics ensure"
        )


def redis_client(config: Settings) -> SyncRedis:
    """A client of the configured Redis whose connect and calls are bounded in time. The
    Redis client is imported here, by the commands that use Redis."""
    from voicemon.redis_client import open_sync

    return open_sync(config, timeout_s=REDIS_TIMEOUT_S, connect_timeout_s=REDIS_CONNECT_TIMEOUT_S)


def require_redis(config: Settings) -> None:
    """Raise the client's error (naming the address) unless the configured Redis answers a
    PING."""
    client = redis_client(config)
    try:
        client.ping()
    finally:
        client.close()
