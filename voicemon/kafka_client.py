"""The Kafka client configuration of the settings, for both client libraries voicemon uses.

confluent-kafka (librdkafka: the producer helper, the DLQ and snapshot publishers, the admin
client and the CLI's readers) takes a dict of librdkafka properties; Faust (aiokafka: the
worker's consumer and producer) takes broker URLs and ``broker_credentials``. Both are built
here from the same ``VOICEMON_KAFKA_*`` settings, so every client connects the same way
(CONTRACT §1). The settings were validated already (``voicemon.settings``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

from voicemon.logs import LIBRDKAFKA_LOGGER
from voicemon.settings import Settings


def confluent_security(settings: Settings) -> dict[str, Any]:
    """The librdkafka security properties of the settings (empty for PLAINTEXT)."""
    config: dict[str, Any] = {}
    if settings.kafka_security_protocol != "PLAINTEXT":
        config["security.protocol"] = settings.kafka_security_protocol
    if settings.kafka_sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username is not None:
        config["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    files = {
        "ssl.ca.location": settings.kafka_ssl_ca_file,
        "ssl.certificate.location": settings.kafka_ssl_cert_file,
        "ssl.key.location": settings.kafka_ssl_key_file,
    }
    config.update({name: str(path) for name, path in files.items() if path is not None})
    if settings.kafka_ssl_key_password is not None:
        config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    return config


def confluent_logging() -> dict[str, Any]:
    """librdkafka's log through Python logging (the logger ``voicemon.librdkafka``, formatted
    by voicemon/logs.py) instead of ``%3|…|FAIL|…`` lines written straight to stderr. While
    a client is destroyed its lines go to stderr whatever the logger, so info lines (level 6,
    e.g. ``BGQUEUE … Purging 1 unserved events``) are not asked for: notice and above only."""
    return {"logger": logging.getLogger(LIBRDKAFKA_LOGGER), "log_level": 5}


def confluent_config(settings: Settings, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A whole librdkafka configuration: the bootstrap servers, the security, the logger,
    then ``extra`` (``group.id`` and the like)."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **confluent_security(settings),
            **confluent_logging(), **(extra or {})}  # fmt: skip


def faust_brokers(settings: Settings) -> list[str]:
    """The broker URLs of Faust's aiokafka transport, one per bootstrap server: ``kafka://``
    whatever the security (Faust takes TLS and SASL from ``broker_credentials``)."""
    servers = (server.strip() for server in settings.kafka_bootstrap.split(","))
    return [f"kafka://{server}" for server in servers if server]


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials``: ``faust.SASLCredentials`` (with an SSL context for
    SASL_SSL), ``faust.SSLCredentials`` for SSL, or None for PLAINTEXT. Reads the certificate
    files. Faust and aiokafka are imported here only: a producer-only install has neither."""
    import faust

    protocol = settings.kafka_security_protocol
    context = aiokafka_ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=None if password is None else password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for aiokafka: the CA file (else the system's CAs), the client
    certificate and key if set; the broker's host name is verified."""
    from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

    password = settings.kafka_ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_ca_file,
        certfile=settings.kafka_ssl_cert_file,
        keyfile=settings.kafka_ssl_key_file,
        password=None if password is None else password.get_secret_value(),
    )
    return context
