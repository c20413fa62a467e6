"""Synthetic pipeline traffic: artifacts flowing through the stages, seeded and repeatable.

``artifact_events`` is pure: it yields the events of one artifact's life. ``LoadMix`` adds the
share of duplicates and malformed messages a realistic stream carries; ``produce`` publishes
it at a steady rate (``voicemon produce``, the demo and the benchmarks).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from voicemon.producer import EventProducer

MALFORMED_SAMPLES = (
    b"{not json",
    b"\xff\xfe\x00garbage",
    b"[]",
    b'"just a string"',
    b'{"event_id": "x", "event_type": "artifact_received"}',
    b'{"event_id": "x", "event_type": "teleported", "occurred_at": 0, "artifact_id": "a"}',
)


def _timestamp(ms: int, rng: random.Random) -> str | int:
    if rng.random() < 0.5:
        return ms
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def artifact_events(
    rng: random.Random,
    artifact_id: str,
    organization_id: str | None,
    start_ms: int,
    stages: Sequence[str],
    failure_chance: float = 0.05,
) -> Iterator[dict[str, Any]]:
    """The events of one artifact, in order; a failed stage fails the artifact."""
    serial = 0

    def event(event_type: str, at_ms: int, **fields: Any) -> dict[str, Any]:
        nonlocal serial
        serial += 1
        body: dict[str, Any] = {
            "event_id": f"{artifact_id}-{serial}",
            "event_type": event_type,
            "occurred_at": _timestamp(at_ms, rng),
            "artifact_id": artifact_id,
        }
        if organization_id is not None:
            body["organization_id"] = organization_id
        return body | {k: v for k, v in fields.items() if v is not None}

    now = start_ms
    yield event("artifact_received", now)
    for stage in stages:
        yield event("stage_started", now, stage=stage)
        duration = round(rng.lognormvariate(6.5, 0.8), 3)
        cost = round(rng.uniform(0.0001, 0.05), 6) if rng.random() < 0.7 else None
        now += int(duration)
        if rng.random() < failure_chance:
            yield event(
                "stage_failed",
                now,
                stage=stage,
                duration_ms=duration,
                ai_cost_usd=cost,
                error_code="E_" + stage.upper(),
            )
            yield event("artifact_failed", now, error_code="E_" + stage.upper())
            return
        yield event("stage_completed", now, stage=stage, duration_ms=duration, ai_cost_usd=cost)
    total = float(now - start_ms)
    yield event("artifact_completed", now, duration_ms=total if rng.random() < 0.95 else None)


@dataclass
class LoadMix:
    """A stream of messages: events, with duplicates and malformed bytes mixed in."""

    seed: int
    organizations: int
    stages: Sequence[str]
    duplicate_share: float = 0.0
    malformed_share: float = 0.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._artifacts = 0
        self._recent: list[dict[str, Any]] = []
        self.duplicates = 0  # copies of earlier events yielded so far (the worker counts none)

    def _organization(self) -> str | None:
        if self.organizations == 0 or self._rng.random() < 0.05:
            return None
        return f"org-{self._rng.randrange(self.organizations):05d}"

    def stream(self, clock_ms: Iterator[int]) -> Iterator[dict[str, Any] | bytes]:
        """Yield event dicts (to publish as JSON) or raw malformed bytes, forever."""
        for start_ms in clock_ms:
            self._artifacts += 1
            artifact = f"art-{self.seed}-{self._artifacts}"
            for body in artifact_events(
                self._rng, artifact, self._organization(), start_ms - 30_000, self.stages
            ):
                yield body
                self._remember(body)
                if self._recent and self._rng.random() < self.duplicate_share:
                    self.duplicates += 1
                    yield self._rng.choice(self._recent)
                if self._rng.random() < self.malformed_share:
                    yield self._rng.choice(MALFORMED_SAMPLES)

    def _remember(self, body: dict[str, Any]) -> None:
        self._recent.append(body)
        if len(self._recent) > 1000:
            del self._recent[:500]


@dataclass(frozen=True, slots=True)
class Published:
    """What the generator published: ``events`` includes the ``duplicates`` it injected (copies
    of earlier events, counted once by the worker); each malformed message is one DLQ entry."""

    events: int
    malformed: int
    duplicates: int = 0

    @property
    def total(self) -> int:
        """Everything the worker will judge: events (duplicates included) + malformed ones."""
        return self.events + self.malformed


def produce(
    producer: EventProducer,
    mix: LoadMix,
    rate: float,
    duration_s: float,
    on_progress: Callable[[float, Published], None] = lambda elapsed, sent: None,
) -> Published:
    """Publish ``mix`` at ``rate`` events per second for ``duration_s`` seconds, then flush."""
    clock = (int(time.time() * 1000) for _ in itertools.count())
    started = time.monotonic()
    events = malformed = 0
    for item in mix.stream(clock):
        if isinstance(item, bytes):
            producer.publish_raw(item)
            malformed += 1
        else:
            producer.send(item)
            events += 1
        elapsed = time.monotonic() - started
        if elapsed >= duration_s:
            break
        ahead = events / rate - elapsed
        if ahead > 0:
            time.sleep(ahead)
        if ahead > 0 or events % 1000 == 0:  # also when the rate cannot be kept up
            on_progress(min(elapsed, duration_s), Published(events, malformed, mix.duplicates))
    producer.flush()
    sent = Published(events, malformed, mix.duplicates)
    on_progress(duration_s, sent)
    return sent
