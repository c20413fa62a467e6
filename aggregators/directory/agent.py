"""The organization-directory agent: ``voice.organizations`` into ``voicemon.organizations``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aggregators.directory import organizations
from voicemon import telemetry
from voicemon.health import Outage, until_done
from voicemon.store import Client

log = logging.getLogger("voicemon.directory")


def add_directory_agent(
    app: Any, topic: Any, open_store: Callable[[], Awaitable[Client | None]], outage: Outage
) -> None:
    """Register the agent; a worker without a store leaves the directory to the one with it."""

    async def update_directory(stream: Any) -> None:
        directory = await open_store()
        if directory is None:
            return
        async for records in stream.noack_take(500, within=1.0):
            names: dict[str, str | None] = {}
            for record in records:
                parsed = organizations.directory_record(record.message.key, record.message.value)
                if parsed is None:
                    message = record.message  # where, as JSON log fields too
                    at = {"topic": message.topic, "partition": message.partition,
                          "offset": message.offset}  # fmt: skip
                    log.warning("ignored a malformed organizations record at offset %s",
                                message.offset, extra=at)  # fmt: skip
                else:
                    names[parsed[0]] = parsed[1]
            await until_done(
                outage, partial(asyncio.to_thread, organizations.upsert, directory, names)
            )
            telemetry.ORGANIZATIONS_UPDATED.inc(len(names))
            for record in records:
                record.ack()

    app.agent(topic, name="voicemon.directory")(update_directory)
