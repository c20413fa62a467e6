"""Serving the query API: standalone (``voicemon api``) or inside the worker process.

With the embedded chDB store the API must share the worker's process (one process owns a
store), so the worker can serve it beside the stream (``VOICEMON_API_ENABLED=true``); with a
ClickHouse server, ``voicemon api`` runs as many separate processes as needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from voicemon.logs import logging_config
from voicemon.settings import Settings


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (the Faust worker)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server(
    app: FastAPI, host: str, port: int, embedded: bool, settings: Settings | None = None
) -> uvicorn.Server:
    """A uvicorn server for ``app``. With ``settings``, its log level, access log and (unless
    embedded: the worker configured logging already) log format are theirs (voicemon/logs.py);
    without, it logs warnings only."""
    if settings is None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    else:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=settings.log_level,
            access_log=settings.api_access_log,
            log_config=None if embedded else logging_config(settings),
        )
    return EmbeddedServer(config) if embedded else uvicorn.Server(config)
