"""The ClickHouse store: the client factory.

``chdb:///path`` opens the embedded engine in this process (one process owns a data path);
``http://user:pass@host:8123/voicemon`` reaches a ClickHouse server with the same SQL. Its
schema: ``voicemon.store_migrations`` (and ``voicemon.cluster_ddl`` for a cluster).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

Client = Any  # clickhouse_connect ships no type information for its client classes


class StoreError(Exception):
    """The store could not be opened or migrated. Operator action: check VOICEMON_CLICKHOUSE_DSN."""


def connect(dsn: str) -> Client:
    """Open a client for ``dsn``; the message of a failure never contains the DSN's secret.
    The driver is imported here, by the first client: a command that opens no store starts
    without it."""
    import clickhouse_connect

    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except ImportError:
        raise StoreError(
            "the embedded chDB store needs the embedded extra, which this install lacks: "
            "install voicemon[embedded] (or the embedded image), or point "
            "VOICEMON_CLICKHOUSE_DSN at a ClickHouse server"
        ) from None
    except Exception as error:  # the driver raises many types; none may leak the DSN
        kind = "embedded chDB" if dsn.startswith("chdb:") else "ClickHouse server"
        raise StoreError(f"cannot open the {kind} store: {redact(str(error), dsn)}") from None


def redact(text: str, dsn: str) -> str:
    """``text`` without the password of ``dsn``."""
    password = urlsplit(dsn).password
    return text.replace(password, "***") if password else text
