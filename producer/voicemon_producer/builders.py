"""Typed builders for the six pipeline events of CONTRACT §3, checked before anything is sent.

Each builder fills ``event_id`` (a uuid4) and ``occurred_at`` (now, RFC 3339 UTC with ``Z``)
unless given, and runs the worker's own validator (``voicemon_producer.event.validate_event``)
on the result: an event the worker would reject raises ``InvalidEvent`` here instead of reaching the
DLQ. Pure apart from the clock and the id source, both injectable.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from voicemon_producer.errors import InvalidEvent
from voicemon_producer.event import (
    DEFAULT_STAGES,
    MAX_EVENT_BYTES,
    EventType,
    Rejection,
    RejectReason,
    validate_event,
)


def rfc3339_utc(moment: datetime) -> str:
    """``moment`` as RFC 3339 in UTC with millisecond precision and ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_event(event: Mapping[str, Any], *, stages: frozenset[str], now_ms: int) -> None:
    """Raise ``InvalidEvent`` if the worker would reject ``event`` at ``now_ms``."""
    value = event if isinstance(event, dict) else dict(event)
    verdict = validate_event(value, now_ms=now_ms, stages=stages)
    if isinstance(verdict, Rejection):
        raise InvalidEvent(_type_name(event), verdict.reason, verdict.detail)


def check_size(event: Mapping[str, Any], size: int) -> None:
    """Raise ``InvalidEvent`` if an event encoded in ``size`` bytes is over the §3 limit."""
    if size > MAX_EVENT_BYTES:
        detail = f"it is {size} bytes encoded; the limit is {MAX_EVENT_BYTES}"
        raise InvalidEvent(_type_name(event), RejectReason.TOO_LARGE, detail)


def _type_name(event: Mapping[str, Any]) -> str | None:
    name = event.get("event_type")
    return name[:64] if isinstance(name, str) and name else None


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class EventBuilder:
    """Builds valid events for a deployment's stages (``Settings.stages``)."""

    def __init__(
        self,
        stages: Iterable[str] = DEFAULT_STAGES,
        *,
        clock: Callable[[], datetime] = _now,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self.stages = frozenset(stages)
        self._clock = clock
        self._new_id = new_id

    def artifact_received(
        self,
        artifact_id: str,
        *,
        organization_id: str | None = None,
        ai_cost_usd: float | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, Any]:
        return self._build(
            EventType.ARTIFACT_RECEIVED,
            artifact_id,
            event_id,
            occurred_at,
            organization_id=organization_id,
            ai_cost_usd=ai_cost_usd,
        )

    def artifact_completed(
        self,
        artifact_id: str,
        *,
        duration_ms: float | None = None,
        organization_id: str | None = None,
        ai_cost_usd: float | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, Any]:
        """``duration_ms`` is the artifact's end-to-end latency (CONTRACT §4)."""
        return self._build(
            EventType.ARTIFACT_COMPLETED,
            artifact_id,
            event_id,
            occurred_at,
            organization_id=organization_id,
            duration_ms=duration_ms,
            ai_cost_usd=ai_cost_usd,
        )

    def artifact_failed(
        self,
        artifact_id: str,
        *,
        error_code: str | None = None,
        organization_id: str | None = None,
        ai_cost_usd: float | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, Any]:
        return self._build(
            EventType.ARTIFACT_FAILED,
            artifact_id,
            event_id,
            occurred_at,
            organization_id=organization_id,
            error_code=error_code,
            ai_cost_usd=ai_cost_usd,
        )

    def stage_started(
        self,
        artifact_id: str,
        stage: str,
        *,
        organization_id: str | None = None,
        ai_cost_usd: float | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, Any]:
        return self._build(
            EventType.STAGE_STARTED,
            artifact_id,
            event_id,
            occurred_at,
            stage=stage,
            organization_id=organization_id,
            ai_cost_usd=ai_cost_usd,
        )

    def stage_completed(
        self,
        artifact_id: str,
        stage: str,
        *,
        duration_ms: float | None = None,
        organization_id: str | None = None,
        ai_cost_usd: float | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, Any]:
        """``duration_ms`` is the stage's latency."""
        return self._build(
            EventType.STAGE_COMPLETED,
            artifact_id,
            event_id,
            occurred_at,
            stage=stage,
            organization_id=organization_id,
            duration_ms=duration_ms,
            ai_cost_usd=ai_cost_usd,
        )

    def stage_failed(
        self,
        artifact_id: str,
        stage: str,
        *,
        error_code: str | None = None,
        duration_ms: float | None = None,
        organization_id: str | None = None,
        ai_cost_usd: float | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, Any]:
        return self._build(
            EventType.STAGE_FAILED,
            artifact_id,
            event_id,
            occurred_at,
            stage=stage,
            organization_id=organization_id,
            error_code=error_code,
            duration_ms=duration_ms,
            ai_cost_usd=ai_cost_usd,
        )

    def _build(
        self,
        event_type: EventType,
        artifact_id: str,
        event_id: str | None,
        occurred_at: datetime | None,
        **optional: object,
    ) -> dict[str, Any]:
        now = self._clock()
        moment = now if occurred_at is None else occurred_at
        if moment.tzinfo is None:
            detail = "occurred_at: a datetime without a time zone is ambiguous; pass an aware one"
            raise InvalidEvent(event_type.value, RejectReason.INVALID_FIELD, detail)
        event: dict[str, Any] = {
            "event_id": self._new_id() if event_id is None else event_id,
            "event_type": event_type.value,
            "occurred_at": rfc3339_utc(moment),
            "artifact_id": artifact_id,
        }
        event.update((name, value) for name, value in optional.items() if value is not None)
        check_event(event, stages=self.stages, now_ms=_epoch_ms(now))
        return event


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
