"""Whether the broker lets this client in, decided in seconds and said in one sentence.

Kafka clients retry a refused login or a failed TLS handshake forever, logging each attempt;
a process started with a wrong password would idle instead of failing. ``check`` connects once
with the settings' configuration (``voicemon.kafka_client``) and tells a refusal (a wrong
password, an untrusted certificate: fix the settings) from a broker that does not answer
(maybe only for now).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from voicemon.kafka_client import confluent_config
from voicemon.settings import Settings

# librdkafka logs every failed attempt to stderr; what matters is in the error raised here.
_quiet = logging.getLogger("voicemon.kafka_access.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class KafkaAccessError(Exception):
    """The broker refused this client: a setting is wrong. The message says which."""


class KafkaUnreachable(Exception):
    """No broker answered in time: the address or protocol is wrong, or Kafka is down."""


def check(settings: Settings, timeout_s: float = 10.0) -> None:
    """Return once a broker answers a metadata request; raise ``KafkaAccessError`` as soon as
    it refuses the login or the TLS handshake, ``KafkaUnreachable`` after ``timeout_s``."""
    errors: list[KafkaError] = []
    quiet = {"error_cb": errors.append, "logger": _quiet, "log_level": 0}
    try:
        admin = AdminClient(confluent_config(settings, quiet))
    except KafkaException as error:  # a key or CA file librdkafka cannot load
        raise KafkaAccessError(
            f"the Kafka client cannot load its TLS files ({error.args[0].str()}): check "
            "VOICEMON_KAFKA_SSL_CA_FILE, VOICEMON_KAFKA_SSL_CERT_FILE, "
            "VOICEMON_KAFKA_SSL_KEY_FILE and VOICEMON_KAFKA_SSL_KEY_PASSWORD"
        ) from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as error:
            errors.append(error.args[0])
        admin.poll(0)  # serves error_cb
        refusal = next((r for r in map(refused, errors) if r), "")
        if refusal:
            raise KafkaAccessError(describe_refusal(settings, refusal))
        if time.monotonic() >= deadline:
            last = errors[-1].str() if errors else "no answer"
            raise KafkaUnreachable(
                f"no Kafka broker answered at {settings.kafka_bootstrap} within "
                f"{timeout_s:g} s ({last}): check VOICEMON_KAFKA_BOOTSTRAP and "
                f"VOICEMON_KAFKA_SECURITY_PROTOCOL ({settings.kafka_security_protocol}), "
                "or start Kafka"
            )


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
