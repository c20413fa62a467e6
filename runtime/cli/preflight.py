"""Quick checks a command makes before it leans on Kafka or Redis, and the CLI's Redis client.

Without them an outage surfaces late and long: librdkafka waits out its metadata timeout
(10 s and more), a producer buffers for minutes, a Redis connect to a silent host waits for
the operating system. A stopped broker is recognised here in about half a second (librdkafka
reports all brokers down), a silent one within ``KAFKA_TIMEOUT_S``; both raise
``KafkaUnreachable``, which ``runtime.cli.errors`` turns into one sentence.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from redis import Redis

KAFKA_TIMEOUT_S = 5.0
KAFKA_POLL_S = 0.5
REDIS_CONNECT_TIMEOUT_S = 3.0
REDIS_TIMEOUT_S = 10.0

# librdkafka's verdicts that no retry within a few seconds will change.
GIVE_UP = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION, KafkaError._SSL})


class KafkaUnreachable(Exception):
    """No broker of ``bootstrap`` answered. ``code`` is librdkafka's error code, if any."""

    def __init__(self, bootstrap: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"{bootstrap}: {reason}")
        self.bootstrap, self.reason, self.code = bootstrap, reason, code


def require_kafka(
    bootstrap: str, config: Mapping[str, Any] | None = None, timeout_s: float = KAFKA_TIMEOUT_S
) -> None:
    """Return once a broker of ``bootstrap`` answers a metadata request; raise
    ``KafkaUnreachable`` as soon as librdkafka gives up on every broker, or after
    ``timeout_s``. ``config`` adds client settings (e.g. security)."""
    seen: list[KafkaError] = []
    client: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
        "log_level": 0,  # the failure is reported once, as a sentence, not as log lines
        "error_cb": seen.append,
    }
    admin = AdminClient(client | dict(config or {}))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=KAFKA_POLL_S)
            return
        except KafkaException as error:
            admin.poll(0)  # serves error_cb: why the brokers are down
            causes = [e for e in seen if e.code() != KafkaError._ALL_BROKERS_DOWN] or [
                error.args[0]
            ]
            if time.monotonic() >= deadline or any(e.code() in GIVE_UP for e in seen):
                raise KafkaUnreachable(bootstrap, causes[0].str(), causes[0].code()) from error


def redis_client(url: str) -> Redis:
    """A Redis client whose connect and calls are bounded in time."""
    return Redis.from_url(
        url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
    )


def require_redis(url: str) -> None:
    """Raise the client's error (naming the address) unless Redis at ``url`` answers a PING."""
    client = redis_client(url)
    try:
        client.ping()
    finally:
        client.close()
