"""Whether the broker lets this client in, decided in seconds and said in one sentence.

Kafka clients retry a refused login, a failed TLS handshake or a stopped broker for a long
time, logging each attempt; a command would hang or a process idle instead of failing.
``probe`` asks for metadata once a broker answers and gives up as soon as librdkafka reports
every broker down or a refusal (about half a second for a stopped broker), or at its
deadline for a silent one. ``check`` probes with the settings' configuration
(``voicemon.kafka_client``) and tells a refusal (a wrong password, an untrusted certificate:
fix the settings, ``KafkaAccessError``) from a broker that does not answer
(``KafkaUnreachable``). The CLI says either in one sentence (``runtime/cli/errors.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from voicemon.kafka_client import confluent_security
from voicemon.settings import Settings

TIMEOUT_S = 5.0
POLL_S = 0.5
# librdkafka's verdicts that no retry within a few seconds will change.
GIVE_UP = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION, KafkaError._SSL})

# librdkafka logs every failed attempt to stderr; what matters is in the error raised here.
_quiet = logging.getLogger("voicemon.kafka_access.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class KafkaAccessError(Exception):
    """The broker refused this client, or the client refused its settings: a setting is
    wrong. The message says which."""


class KafkaUnreachable(Exception):
    """No broker of ``bootstrap`` answered (``reason``, librdkafka's error ``code`` if any), or
    one refused this client (``refusal``: 'authentication' or 'tls', else '')."""

    def __init__(self, bootstrap: str, reason: str, code: int | None = None,
                 refusal: str = "") -> None:  # fmt: skip
        super().__init__(f"{bootstrap}: {reason}")
        self.bootstrap, self.reason, self.code, self.refusal = bootstrap, reason, code, refusal


def probe(
    bootstrap: str, config: Mapping[str, Any] | None = None, timeout_s: float = TIMEOUT_S
) -> None:
    """Return once a broker of ``bootstrap`` answers a metadata request; raise
    ``KafkaUnreachable`` as soon as librdkafka gives up on every broker or is refused, or
    after ``timeout_s``. ``config`` adds client settings (``kafka_client.confluent_security``).
    A setting the client cannot load (a TLS key, its password) raises ``KafkaAccessError``."""
    seen: list[KafkaError] = []
    client: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
        "error_cb": seen.append,
        "logger": _quiet,
        "log_level": 0,  # the failure is reported once, as a sentence, not as log lines
    }
    try:
        admin = AdminClient(client | dict(config or {}))
    except KafkaException as error:  # a key or CA file librdkafka cannot load
        raise KafkaAccessError(
            f"the Kafka client cannot load its TLS files ({error.args[0].str()}): check "
            "VOICEMON_KAFKA_SSL_CA_FILE, VOICEMON_KAFKA_SSL_CERT_FILE, "
            "VOICEMON_KAFKA_SSL_KEY_FILE and VOICEMON_KAFKA_SSL_KEY_PASSWORD"
        ) from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=POLL_S)
            return
        except KafkaException as error:
            admin.poll(0)  # serves error_cb: why the brokers are down
            causes = [e for e in seen if e.code() != KafkaError._ALL_BROKERS_DOWN] or [
                error.args[0]
            ]
            refusal = next((r for r in map(refused, seen) if r), "")
            if refusal or time.monotonic() >= deadline or any(e.code() in GIVE_UP for e in seen):
                cause = causes[0]
                raise KafkaUnreachable(bootstrap, cause.str(), cause.code(), refusal) from error


def check(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    """``probe`` with the settings' broker and security; a refusal raises
    ``KafkaAccessError`` naming the settings to check (never a secret)."""
    try:
        probe(settings.kafka_bootstrap, confluent_security(settings), timeout_s)
    except KafkaUnreachable as error:
        if error.refusal:
            raise KafkaAccessError(describe_refusal(settings, error.refusal)) from error
        raise


def refused(error: KafkaError) -> str:
    """'authentication' or 'tls' if ``error`` is the broker refusing this client, else ''."""
    text = error.str()
    if error.code() == KafkaError._AUTHENTICATION:
        return "authentication"
    if error.code() == KafkaError._SSL or "SSL routines" in text or "certificate" in text:
        return "tls"
    return ""


def describe_refusal(settings: Settings, refusal: str) -> str:
    """One sentence naming what was refused and the settings to check (never a secret)."""
    where = f"Kafka at {settings.kafka_bootstrap}"
    if refusal == "authentication":
        return (
            f"{where} refused authentication ({settings.kafka_sasl_mechanism} as user "
            f"'{settings.kafka_sasl_username}'): check VOICEMON_KAFKA_SASL_USERNAME, "
            "VOICEMON_KAFKA_SASL_PASSWORD and VOICEMON_KAFKA_SASL_MECHANISM"
        )
    return (
        f"the TLS handshake with {where} failed (the broker's certificate is not trusted, or "
        "it refused ours): check VOICEMON_KAFKA_SSL_CA_FILE, VOICEMON_KAFKA_SSL_CERT_FILE "
        "and VOICEMON_KAFKA_SSL_KEY_FILE"
    )
