"""The DLQ: rejected payloads, untouched, with the headers of CONTRACT §2 and §3.0."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from consumers.decode import RejectedPayload
from voicemon import telemetry
from voicemon.producer import Headers, KafkaPublisher


@dataclass(frozen=True, slots=True)
class DeadLetter:
    rejected: RejectedPayload
    key: bytes | None
    partition: int
    offset: int

    def headers(self) -> Headers:
        rejection = self.rejected.rejection
        headers = [
            ("voicemon-reason", rejection.reason.value.encode()),
            ("voicemon-detail", rejection.detail.encode()),
            ("voicemon-source-partition", str(self.partition).encode()),
            ("voicemon-source-offset", str(self.offset).encode()),
        ]
        if self.rejected.batch_index is not None:
            headers.append(("voicemon-batch-index", str(self.rejected.batch_index).encode()))
        return headers


class DeadLetters:
    def __init__(self, publisher: KafkaPublisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Publish and wait for Kafka's acknowledgement of every letter."""
        if not letters:
            return
        for letter in letters:
            self._publisher.send(self._topic, letter.rejected.payload, letter.key, letter.headers())
        await asyncio.to_thread(self._publisher.flush)
        for letter in letters:
            telemetry.EVENTS_REJECTED.labels(letter.rejected.rejection.reason.value).inc()
