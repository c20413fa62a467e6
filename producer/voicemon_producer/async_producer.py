"""The producer library for asyncio code: ``EventProducer``'s core behind awaitables.

``publish`` queues an event without blocking the loop (the same checks, bounded buffer,
overflow policy, batches, background thread and delivery guarantees as ``EventProducer``)
and returns an asyncio future resolved on the running loop once the broker has acknowledged
the event; a failure no one awaits is not logged once per event (it is counted, and the
overflow log says it once per episode). ``flush`` and ``aclose`` wait in a worker thread, so
the loop never waits on Kafka. ``async with`` closes on exit and never replaces the
exception leaving the block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Self

from voicemon_producer.builders import EventBuilder
from voicemon_producer.producer import Delivery, EventProducer, HeadersLike, ProducerStats


class AsyncEventProducer:
    """``AsyncEventProducer(bootstrap, topic, **options)`` takes ``EventProducer``'s
    arguments, client settings included."""

    def __init__(self, *args: Any, **options: Any) -> None:
        self._core = EventProducer(*args, **options)

    @property
    def events(self) -> EventBuilder:
        """Builders of valid events for this producer's stages."""
        return self._core.events

    def publish(
        self, event: Mapping[str, Any], headers: HeadersLike | None = None
    ) -> asyncio.Future[Delivery]:
        """Queue one event (raises ``InvalidEvent`` or ``ProducerClosed`` at once); await the
        result for its ``Delivery``, or a ``DeliveryError``. Call it on the loop."""
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._core.publish_with(future, event, headers)
        return future

    def send(self, event: Mapping[str, Any], headers: HeadersLike | None = None) -> None:
        """``publish`` without a future: failures are raised by the next ``flush``."""
        self._core.publish_with(None, event, headers)

    def stats(self) -> ProducerStats:
        return self._core.stats()

    async def flush(self, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self._core.flush, timeout_s)

    async def aclose(self, timeout_s: float | None = None) -> ProducerStats:
        return await asyncio.to_thread(self._core.close, timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        await asyncio.to_thread(self._core.__exit__, kind, *rest)
