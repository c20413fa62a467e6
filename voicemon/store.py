"""The ClickHouse store: one client factory and the numbered migrations.

``chdb:///path`` opens the embedded engine in this process (one process owns a data path);
``http://user:pass@host:8123/voicemon`` reaches a ClickHouse server with the same SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect

log = logging.getLogger(__name__)

Client = Any  # clickhouse_connect ships no type information for its client classes


class StoreError(Exception):
    """The store could not be opened or migrated. Operator action: check VOICEMON_CLICKHOUSE_DSN."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def connect(dsn: str) -> Client:
    """Open a client for ``dsn``; the message of a failure never contains the DSN's secret."""
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except Exception as error:  # the driver raises many types; none may leak the DSN
        kind = "embedded chDB" if dsn.startswith("chdb:") else "ClickHouse server"
        raise StoreError(f"cannot open the {kind} store: {redact(str(error), dsn)}") from None


def redact(text: str, dsn: str) -> str:
    """``text`` without the password of ``dsn``."""
    password = urlsplit(dsn).password
    return text.replace(password, "***") if password else text


def migrations() -> list[Migration]:
    """The numbered SQL files of ``voicemon/migrations``, in order."""
    found = []
    for entry in resources.files("voicemon.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        version, _, rest = entry.name.partition("_")
        text = "\n".join(
            line for line in entry.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        statements = tuple(part.strip() for part in text.split(";") if part.strip())
        found.append(Migration(int(version), rest.removesuffix(".sql"), statements))
    return sorted(found, key=lambda migration: migration.version)


def migrate(client: Client) -> list[str]:
    """Apply every migration (each statement is idempotent); return the names applied."""
    applied = []
    for migration in migrations():
        for statement in migration.statements:
            client.command(statement)
        applied.append(f"{migration.version:04d}_{migration.name}")
    log.info("store migrated", extra={"migrations": applied})
    return applied
