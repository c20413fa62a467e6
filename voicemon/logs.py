"""Log lines for operators, alike in the worker (Faust), the API (uvicorn) and the CLI.

``VOICEMON_LOG_FORMAT=json`` writes one JSON object per line — ``time`` (UTC, RFC 3339),
``level``, ``logger``, ``message``, then what is known of the record: ``topic``,
``partition``, ``offset`` (pass them as ``extra=``), librdkafka's ``facility`` and ``client``,
uvicorn's ``client``/``method``/``path``/``status`` on access lines, ``exception`` with the
traceback. A multi-line message (Faust's tables) stays one line, its newlines escaped.
``text`` (the default) is a plain ``time level logger: message`` line. ``VOICEMON_LOG_LEVEL``
sets the level of every logger. Whatever the format, every secret of the settings (and the
password of every DSN and URL among them) is replaced by ``***`` in the line.

librdkafka's own log (otherwise written straight to stderr as ``%3|…|FAIL|…``) goes through
the logger ``voicemon.librdkafka``: every confluent-kafka client made from the settings gets
``kafka_client.confluent_logging()``.
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from pydantic import SecretStr

from voicemon.settings import Settings

LIBRDKAFKA_LOGGER = "voicemon.librdkafka"
CONTEXT_FIELDS = ("topic", "partition", "offset", "organization_id", "event_id", "reason")
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
MASK = "***"


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every secret value of the settings (a URL's password, not its address), longest first
    (a secret containing another is masked whole), each also without surrounding whitespace
    (a value read from a file or a Kubernetes Secret keeps its trailing newline)."""
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        values = value.values() if isinstance(value, dict) else (value,)
        for item in values:
            if isinstance(item, SecretStr):
                found.update(escaped_forms(secret_forms(item.get_secret_value())))
    return tuple(sorted((s for s in found if s.strip()), key=len, reverse=True))


def escaped_forms(secrets: Iterable[str]) -> Iterable[str]:
    """Each secret as it is, as ``repr`` shows it and as JSON encodes it (newlines and
    non-ASCII escaped), so that a quoted or JSON-encoded secret is masked too."""
    for secret in secrets:
        yield secret
        yield repr(secret)[1:-1]
        yield json.dumps(secret)[1:-1]
        yield json.dumps(secret, ensure_ascii=False)[1:-1]


def secret_forms(secret: str) -> Iterable[str]:
    """The forms in which ``secret`` may show up in a line: a URL's password (raw and
    percent-decoded), anything else as it is and stripped."""
    try:
        parts = urlsplit(secret.strip())
        is_url = bool(parts.scheme) and secret.strip().startswith(f"{parts.scheme}://")
        password = parts.password if is_url else None
    except ValueError:
        password, is_url = None, False
    if is_url:
        if password:
            yield password
            yield unquote(password)
        return
    yield secret
    yield secret.strip()


def masked(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class _Masking(logging.Formatter):
    """A formatter that masks ``secrets`` in whatever it writes."""

    def __init__(self, secrets: Iterable[str] = (), fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.secrets = tuple(secrets)


class TextFormatter(_Masking):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__(secrets, "%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return masked(super().format(record), self.secrets)


class JsonFormatter(_Masking):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            name: masked(value if isinstance(value, str) else str(value), self.secrets)
            if not isinstance(value, int | float | bool | None)
            else value
            for name, value in self.entry(record).items()
        }  # masked before encoding: the JSON stays valid
        return orjson.dumps(entry).decode()

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as one flat object (pure: unit-tested)."""
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        args = record.args if isinstance(record.args, tuple) else ()
        if record.name == LIBRDKAFKA_LOGGER and len(args) == 3:  # "%s [%s] %s"
            entry.update(facility=args[0], client=args[1], message=str(args[2]))
        else:
            entry["message"] = record.getMessage()
        if record.name == "uvicorn.access" and len(args) == len(ACCESS_FIELDS):
            entry.update(zip(ACCESS_FIELDS, args, strict=True))
        for field in CONTEXT_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return entry


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` of the settings: one stderr handler on the root
    logger; every other logger (Faust, aiokafka, uvicorn, librdkafka) propagates to it."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"voicemon": {"()": formatter, "secrets": secrets_of(settings)}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "voicemon",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            name: {"handlers": [], "propagate": True, "level": level}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", LIBRDKAFKA_LOGGER)
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


def configure_logging(settings: Settings) -> None:
    """Configure the process's logging from the settings (the API and the CLI; the worker
    hands ``logging_config`` to Faust, which configures it the same way)."""
    logging.config.dictConfig(logging_config(settings))
