"""The producer library for asyncio code: ``EventProducer``'s core behind awaitables.

``publish`` queues an event at once (the same checks, batches, background thread and
delivery guarantees as ``EventProducer``) and returns an asyncio future resolved on the
running loop once the broker has acknowledged the event; ``flush`` and ``aclose`` wait in a
worker thread, so the loop never blocks on Kafka. ``async with`` closes on exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Self

from voicemon.event_builders import EventBuilder
from voicemon.producer import Delivery, EventProducer, settings_options
from voicemon.settings import Settings


class AsyncEventProducer:
    """``AsyncEventProducer(bootstrap, topic, **options)`` takes ``EventProducer``'s
    arguments, client settings included."""

    def __init__(self, *args: Any, **options: Any) -> None:
        self._core = EventProducer(*args, **options)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A producer for the deployment ``settings`` describe; see ``EventProducer``."""
        return cls(**{**settings_options(settings), **options})

    @property
    def events(self) -> EventBuilder:
        """Builders of valid events for this producer's stages."""
        return self._core.events

    def publish(self, event: Mapping[str, Any]) -> asyncio.Future[Delivery]:
        """Queue one event (raises ``InvalidEvent`` or ``ProducerClosed`` at once); await the
        result for its ``Delivery``, or a ``DeliveryError``."""
        return asyncio.wrap_future(self._core.publish(event))

    async def flush(self, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self._core.flush, timeout_s)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self._core.close, timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
