"""voicemon/logs.py: one JSON object per line (or a plain line), the fields operators filter
on, and no secret of the settings in any line whatever its bytes."""

from __future__ import annotations

import io
import logging
import socket
import sys
import time
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer
from pydantic import ValidationError

from voicemon import kafka_client, logs
from voicemon.settings import Settings

SECRET = "a-jwt-key-with-ünïcödé-and-a-newline-0123456789\n"
PASSWORD = "p@ss wörd\nx"


def record(name: str, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args or None, None)
    made.__dict__.update(extra)
    return made


def test_a_record_is_one_flat_object_with_level_logger_message_and_position() -> None:
    entry = logs.JsonFormatter().entry(
        record("consumers.ingest", "batch of %d\nsecond line", 3, topic="t", partition=2, offset=9)
    )
    assert entry.pop("time").endswith("Z")
    assert entry == {"level": "warning", "logger": "consumers.ingest",
                     "message": "batch of 3\nsecond line", "topic": "t", "partition": 2,
                     "offset": 9}  # fmt: skip
    line = logs.JsonFormatter().format(record("x", "a\nb\nc"))
    assert "\n" not in line and orjson.loads(line)["message"] == "a\nb\nc"


def test_librdkafka_and_access_lines_carry_their_own_fields() -> None:
    kafka = logs.JsonFormatter().entry(
        record(logs.LIBRDKAFKA_LOGGER, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "refused")
    )
    fields = (kafka["facility"], kafka["client"], kafka["message"])
    assert fields == ("FAIL", "rdkafka#producer-1", "refused")
    line = ('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/healthz", "1.1", 200)
    access = logs.JsonFormatter().entry(record("uvicorn.access", *line))
    assert (access["method"], access["path"], access["status"]) == ("GET", "/healthz", 200)
    assert access["message"] == '1.2.3.4:5 - "GET /healthz HTTP/1.1" 200'


def test_an_exception_is_in_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("x", "failed")
        failed.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(failed)
    assert "\n" not in line and "ValueError: boom" in orjson.loads(line)["exception"]


@pytest.fixture
def secret_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("VOICEMON_JWT_SECRET", SECRET)
    monkeypatch.setenv("VOICEMON_JWT_KEYS", orjson.dumps({"k2": SECRET[::-1] + "zz"}).decode())
    monkeypatch.setenv("VOICEMON_REDIS_URL", "redis://user:s3cr%C3%A9t@redis:6379/0")
    monkeypatch.setenv("VOICEMON_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("VOICEMON_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("VOICEMON_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("VOICEMON_KAFKA_SASL_PASSWORD", PASSWORD)
    return Settings()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_of_the_settings_in_any_line(secret_settings: Settings, fmt: str) -> None:
    settings = secret_settings.model_copy(update={"log_format": fmt})
    formatter = logs.logging_config(settings)["formatters"]["voicemon"]
    made = formatter["()"](secrets=formatter["secrets"])
    leaked = [SECRET, SECRET.strip(), SECRET[::-1] + "zz", PASSWORD, "s3crét", "s3cr%C3%A9t"]
    for text in leaked:
        line = made.format(record("x", "connecting with %r / %s", text, text))
        assert text not in line and "***" in line, (text, line)
        if fmt == "json":
            assert text not in orjson.loads(line)["message"]
    address = made.format(record("x", "redis at redis://user:s3cr%C3%A9t@redis:6379/0"))
    assert "redis:6379" in address  # the address stays, only its password goes


def test_the_redis_address_without_a_password_is_not_a_secret() -> None:
    assert logs.secrets_of(Settings(redis_url="redis://127.0.0.1:6379/0")) == ()


@pytest.fixture
def restored_logging() -> Iterator[None]:
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


@pytest.mark.usefixtures("restored_logging")
def test_format_and_level_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEMON_LOG_FORMAT", "JSON")
    monkeypatch.setenv("VOICEMON_LOG_LEVEL", "Warning")
    settings = Settings()
    assert (settings.log_format, settings.log_level) == ("json", "warning")
    stream = io.StringIO()
    logs.configure_logging(settings)
    logging.root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("faust.worker").info("not shown")
    logging.getLogger("faust.worker").warning("shown")
    logging.getLogger(logs.LIBRDKAFKA_LOGGER).error("%s [%s] %s", "FAIL", "c", "down")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["logger"], e["message"]) for e in lines] == [
        ("faust.worker", "shown"), (logs.LIBRDKAFKA_LOGGER, "down")]  # fmt: skip
    for bad in ("xml", "verbose"):
        monkeypatch.setenv("VOICEMON_LOG_FORMAT", bad)
        with pytest.raises(ValidationError):
            Settings()


@pytest.mark.usefixtures("restored_logging")
def test_librdkafka_logs_through_python_logging_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real librdkafka client (no broker needed: it logs that none answers) configured like
    every client voicemon opens writes JSON lines through the root handler, not to stderr."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("VOICEMON_LOG_FORMAT", "json")
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
    stream = io.StringIO()
    logs.configure_logging(settings)
    logging.root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    producer = Producer(kafka_client.confluent_config(settings, {"client.id": "log-probe"}))
    deadline = time.monotonic() + 20
    while "log-probe" not in stream.getvalue() and time.monotonic() < deadline:
        producer.poll(0.2)  # serves librdkafka's log queue on this thread
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    kafka = [line for line in lines if line["logger"] == logs.LIBRDKAFKA_LOGGER]
    assert kafka, stream.getvalue()
    assert all(line["client"].startswith("log-probe") and line["facility"] for line in kafka)
    assert any(str(port) in line["message"] for line in kafka)
