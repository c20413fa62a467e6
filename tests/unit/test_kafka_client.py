"""The Kafka security settings: validated at start, translated alike for confluent-kafka and
Faust/aiokafka (voicemon/kafka_client.py), refusals told apart (voicemon/kafka_access.py)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka import KafkaError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from runtime.cli import app
from runtime.cli.common import settings as cli_settings
from voicemon import kafka_access, kafka_client
from voicemon.devtools.secure_broker import TlsFiles, make_tls_files
from voicemon.settings import Settings


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def scram(tls: TlsFiles, **override: Any) -> Settings:
    """SCRAM-SHA-512 over mutual TLS, the client key encrypted."""
    fields: dict[str, Any] = {
        "kafka_bootstrap": "k1:9093,k2:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "voicemon",
        "kafka_sasl_password": "s3cret-pw",
        "kafka_ssl_ca_file": tls.ca,
        "kafka_ssl_cert_file": tls.client_cert,
        "kafka_ssl_key_file": tls.client_key,
        "kafka_ssl_key_password": tls.key_password,
    }
    return Settings(**(fields | override))


def problem(**fields: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        Settings(**fields)
    return str(raised.value.errors(include_url=False)[0]["msg"])


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = Settings(kafka_bootstrap="k1:9092")
    assert kafka_client.confluent_security(settings) == {}
    assert kafka_client.confluent_config(settings, {"group.id": "g"}) == {
        "bootstrap.servers": "k1:9092",
        "logger": logging.getLogger("voicemon.librdkafka"),  # librdkafka's log via logging
        "log_level": 5,  # notice and above: a destroyed client's info lines go to stderr
        "group.id": "g",
    }
    assert kafka_client.faust_credentials(settings) is None


def test_librdkafka_gets_every_security_setting(tls: TlsFiles) -> None:
    assert kafka_client.confluent_security(scram(tls)) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "voicemon",
        "sasl.password": "s3cret-pw",
        "ssl.ca.location": str(tls.ca),
        "ssl.certificate.location": str(tls.client_cert),
        "ssl.key.location": str(tls.client_key),
        "ssl.key.password": tls.key_password,
    }


def test_faust_gets_one_kafka_url_per_bootstrap_server(tls: TlsFiles) -> None:
    assert kafka_client.faust_brokers(scram(tls)) == ["kafka://k1:9093", "kafka://k2:9093"]


def test_aiokafka_gets_sasl_over_tls_with_the_client_certificate(tls: TlsFiles) -> None:
    credentials = kafka_client.faust_credentials(scram(tls))
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)  # what Faust hands to aiokafka
    context = auth.pop("ssl_context")
    assert auth == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "voicemon",
        "sasl_plain_password": "s3cret-pw",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "voicemon test CA"),),)
    ]


def test_aiokafka_gets_sasl_in_plain_text_without_tls() -> None:
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                        kafka_sasl_username="u", kafka_sasl_password="p")  # fmt: skip
    auth = credentials_to_aiokafka_auth(kafka_client.faust_credentials(settings))
    assert auth == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                    "sasl_plain_username": "u", "sasl_plain_password": "p",
                    "ssl_context": None}  # fmt: skip


def test_mutual_tls_without_sasl(tls: TlsFiles) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=tls.ca,
                        kafka_ssl_cert_file=tls.client_cert, kafka_ssl_key_file=tls.client_key,
                        kafka_ssl_key_password=tls.key_password)  # fmt: skip
    assert kafka_client.confluent_security(settings)["security.protocol"] == "SSL"
    credentials = kafka_client.faust_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


def test_a_wrong_key_password_fails_when_the_context_is_built(tls: TlsFiles) -> None:
    with pytest.raises(ssl.SSLError):
        kafka_client.aiokafka_ssl_context(scram(tls, kafka_ssl_key_password="wrong"))


def test_secrets_are_not_shown(tls: TlsFiles) -> None:
    settings = scram(tls)
    assert "s3cret-pw" not in repr(settings) and tls.key_password not in repr(settings)
    assert "s3cret-pw" not in repr(kafka_client.faust_credentials(settings))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512"},
         "VOICEMON_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs VOICEMON_KAFKA_SASL_MECHANISM, "
         "VOICEMON_KAFKA_SASL_USERNAME and VOICEMON_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
         "VOICEMON_KAFKA_SASL_* is set but VOICEMON_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not "
         "use SASL: set it to SASL_SSL (or SASL_PLAINTEXT)"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
          "kafka_sasl_username": "u", "kafka_sasl_password": "p", "kafka_ssl_ca_file": __file__},
         "VOICEMON_KAFKA_SSL_* is set but VOICEMON_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does "
         "not use TLS: set it to SSL or SASL_SSL"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": __file__},
         "VOICEMON_KAFKA_SSL_CERT_FILE and VOICEMON_KAFKA_SSL_KEY_FILE go together: a client "
         "certificate needs its private key"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_key_password": "x"},
         "VOICEMON_KAFKA_SSL_KEY_PASSWORD is set without VOICEMON_KAFKA_SSL_KEY_FILE"),
    ],
)  # fmt: skip
def test_contradicting_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    assert problem(**fields) == f"Value error, {message}"


def test_unknown_values_and_missing_files_are_refused(tmp_path: Path) -> None:
    assert "'SASL_SSL'" in problem(kafka_security_protocol="TLS")
    assert "'SCRAM-SHA-512'" in problem(kafka_security_protocol="SASL_SSL",
                                        kafka_sasl_mechanism="SCRAM")  # fmt: skip
    assert problem(kafka_security_protocol="SSL", kafka_ssl_ca_file=tmp_path / "nope.pem") == (
        "Path does not point to a file"
    )


def test_the_cli_says_what_contradicts_in_one_sentence_before_touching_kafka() -> None:
    env = {"VOICEMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "VOICEMON_KAFKA_SASL_PASSWORD": "pw1"}
    cli_settings.cache_clear()  # the command reads the environment afresh
    try:
        result = CliRunner().invoke(app, ["dlq-count"], env=env)
    finally:
        cli_settings.cache_clear()
    output = " ".join(result.output.split())
    assert result.exit_code == 1
    assert output == (
        "error: VOICEMON_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs VOICEMON_KAFKA_SASL_MECHANISM, "
        "VOICEMON_KAFKA_SASL_USERNAME and VOICEMON_KAFKA_SASL_PASSWORD"
    )


@pytest.mark.parametrize(
    ("code", "text", "refusal"),
    [
        (KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed",
         "authentication"),
        (KafkaError._SSL, "SSL handshake failed: certificate verify failed", "tls"),
        (KafkaError._TRANSPORT, "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad "
         "certificate", "tls"),
        (KafkaError._TRANSPORT, "sasl_ssl://k1:9093/bootstrap: Connect to ipv4#10.0.0.1:9093 "
         "failed: Connection refused", ""),
        (KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down", ""),
    ],
)  # fmt: skip
def test_refusals_are_told_from_outages(code: int, text: str, refusal: str) -> None:
    assert kafka_access.refused(KafkaError(code, text)) == refusal


def test_a_refusal_names_the_settings_to_check_and_no_secret(tls: TlsFiles) -> None:
    settings = scram(tls, kafka_bootstrap="k1:9093")
    said = kafka_access.describe_refusal(settings, "authentication")
    assert said == (
        "Kafka at k1:9093 refused authentication (SCRAM-SHA-512 as user 'voicemon'): check "
        "VOICEMON_KAFKA_SASL_USERNAME, VOICEMON_KAFKA_SASL_PASSWORD and "
        "VOICEMON_KAFKA_SASL_MECHANISM"
    )
    assert "VOICEMON_KAFKA_SSL_CA_FILE" in kafka_access.describe_refusal(settings, "tls")
    assert SecretStr("s3cret-pw").get_secret_value() not in said


def test_a_wrong_key_password_is_refused_before_connecting(tls: TlsFiles) -> None:
    with pytest.raises(kafka_access.KafkaAccessError) as raised:
        kafka_access.check(scram(tls, kafka_ssl_key_password="wrong"), timeout_s=1)
    said = str(raised.value)
    assert said.startswith("the Kafka client cannot load its TLS files (")
    assert "ssl.key.location failed" in said and tls.key_password not in said
    assert said.endswith(
        "): check VOICEMON_KAFKA_SSL_CA_FILE, VOICEMON_KAFKA_SSL_CERT_FILE, "
        "VOICEMON_KAFKA_SSL_KEY_FILE and VOICEMON_KAFKA_SSL_KEY_PASSWORD"
    )
