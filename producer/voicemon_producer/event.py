"""The pipeline event of CONTRACT §3: its schema, its reason codes, and the validator.

The worker decodes with it and the producer checks with it: one module, shipped in the light
``voicemon-producer`` distribution and re-exported as ``voicemon.event``. Everything here is
pure: ``validate_event`` turns one decoded JSON value into either a ``PipelineEvent`` or a
``Rejection`` and never raises.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Protocol

import msgspec
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    ValidationError,
)
from pydantic_core import PydanticCustomError

MAX_EVENT_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 1000
FUTURE_TOLERANCE_MS = 5 * 60 * 1000
RAW_RETENTION_MS = 48 * 3600 * 1000
# The stages a deployment has unless it configures its own (``VOICEMON_STAGES``).
DEFAULT_STAGES = ("transcription", "claims_extraction", "entity_resolution", "draft_generation")


class EventType(StrEnum):
    ARTIFACT_RECEIVED = "artifact_received"
    ARTIFACT_COMPLETED = "artifact_completed"
    ARTIFACT_FAILED = "artifact_failed"
    STAGE_STARTED = "stage_started"
    STAGE_COMPLETED = "stage_completed"
    STAGE_FAILED = "stage_failed"


STAGE_EVENT_TYPES = frozenset(
    {EventType.STAGE_STARTED, EventType.STAGE_COMPLETED, EventType.STAGE_FAILED}
)
_EVENT_TYPE_BY_NAME = {t.value: t for t in EventType}
_EVENT_TYPES = frozenset(_EVENT_TYPE_BY_NAME)
_REQUIRED_FIELDS = ("event_id", "event_type", "occurred_at", "artifact_id")


class RejectReason(StrEnum):
    """The reason codes of CONTRACT §3.3, carried in the DLQ header ``voicemon-reason``."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNKNOWN_STAGE = "unknown_stage"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_LATE = "too_late"
    UNSTORABLE = "unstorable"  # the store refused it for what it contains (a safety net)


class PipelineEvent(msgspec.Struct, frozen=True, gc=False):
    """One accepted event; ``occurred_at_ms`` is UTC epoch milliseconds."""

    event_id: str
    event_type: EventType
    occurred_at_ms: int
    artifact_id: str
    organization_id: str | None = None
    stage: str | None = None
    duration_ms: float | None = None
    ai_cost_usd: float | None = None
    error_code: str | None = None
    schema_version: int = 1


class Rejection(msgspec.Struct, frozen=True, gc=False):
    reason: RejectReason
    detail: str


_Id = Annotated[StrictStr, Field(min_length=1, max_length=128)]
_Duration = Annotated[float, Strict(), Field(ge=0, le=86_400_000, allow_inf_nan=False)]
_Cost = Annotated[float, Strict(), Field(ge=0, le=10_000, allow_inf_nan=False)]


# An organization id (CONTRACT §3): the one definition, used by the event validator, the
# worker's fast decode, the query API's parameter and the organization directory.
ORGANIZATION_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
ORGANIZATION_ID_RULE = "1 to 128 ASCII letters, digits, '_', '.', ':' or '-'"


def _organization_id(value: str) -> str:
    if ORGANIZATION_ID.fullmatch(value) is None:
        raise PydanticCustomError(
            "organization_id", "must be {rule}", {"rule": ORGANIZATION_ID_RULE}
        )
    return value


OrganizationId = Annotated[
    StrictStr, Field(min_length=1, max_length=128), AfterValidator(_organization_id)
]


class _EventFields(BaseModel):
    """Field types and bounds of CONTRACT §3 (what pydantic checks for us)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: _Id
    event_type: StrictStr
    occurred_at: StrictStr | StrictInt
    artifact_id: _Id
    organization_id: OrganizationId | None = None
    stage: StrictStr | None = None
    duration_ms: _Duration | None = None
    ai_cost_usd: _Cost | None = None
    error_code: Annotated[StrictStr, Field(max_length=128)] | None = None
    schema_version: Annotated[StrictInt, Field(ge=1, le=65_535)] = 1  # the store's UInt16


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z",
    re.ASCII,  # \d is 0-9 only, and \Z: a trailing newline is not "the end"
)


def decision_time_ms(record_ms: int | None, log_append: bool, clock_ms: int) -> int:
    """The "now" of the time rules (CONTRACT §3.2) for one Kafka record: its log-append time;
    or its create time when that lies within 5 minutes of the worker's clock, either side (a
    producer's clock running ahead must not let future events in, nor a record read long
    after it was created decide by a time long gone); else the clock, as for a record
    without a timestamp. A replay or a retry of a log-append record decides alike."""
    if record_ms is None or record_ms < 0:
        return clock_ms
    if log_append or abs(record_ms - clock_ms) <= FUTURE_TOLERANCE_MS:
        return record_ms
    return clock_ms


def late_rule_time_ms(record_ms: int | None, log_append: bool, clock_ms: int) -> int:
    """The "now" of the record side of the too-late rule (CONTRACT §3.2): the record's time
    whenever it is not ahead of the worker's clock by more than 5 minutes — a record read
    long after it was created is judged by its own time here, and by the worker's clock in
    ingest, which keeps the first decision of a replay."""
    decided = decision_time_ms(record_ms, log_append, clock_ms)
    if record_ms is not None and 0 <= record_ms < decided:
        return record_ms
    return decided


def parse_occurred_at(value: str | int) -> int | None:
    """RFC 3339 (offset required) or integer epoch ms -> UTC epoch ms; None if neither."""
    if isinstance(value, int):
        return value
    match = _RFC3339.match(value)
    if match is None:
        return None
    try:  # Python reads the common spellings itself (fractions past 6 digits truncated)
        parsed = datetime.fromisoformat(value)
    except ValueError:  # 'z', 't', or a field out of range
        date, time, fraction, offset = match.groups()
        micros = (fraction or ".0")[1:7].ljust(6, "0")
        offset = "+00:00" if offset in ("Z", "z") else offset
        try:
            parsed = datetime.fromisoformat(f"{date}T{time}.{micros}{offset}")
        except ValueError:
            return None
    return (parsed - _EPOCH) // _MILLISECOND


def _first_error(error: ValidationError) -> Rejection:
    problems = error.errors(include_url=False, include_input=False)
    for problem in problems:
        if problem["type"] == "missing":
            return Rejection(
                RejectReason.MISSING_FIELD, f"{_loc(problem)}: required field is missing"
            )
    problem = problems[0]
    return Rejection(RejectReason.INVALID_FIELD, f"{_loc(problem)}: {problem['msg']}")


def _loc(problem: Any) -> str:
    return ".".join(str(part) for part in problem["loc"][:1]) or "event"


def validate_event(
    value: object, *, now_ms: int, stages: frozenset[str], late_ms: int | None = None
) -> PipelineEvent | Rejection:
    """Check one decoded JSON value against CONTRACT §3; reasons follow §3.3."""
    if not isinstance(value, dict):
        return Rejection(
            RejectReason.NOT_AN_OBJECT, f"event must be a JSON object, got {_kind(value)}"
        )
    for name in _REQUIRED_FIELDS:
        if value.get(name) is None:
            return Rejection(RejectReason.MISSING_FIELD, f"{name}: required field is missing")
    event_type = value["event_type"]
    if isinstance(event_type, str) and event_type not in _EVENT_TYPES:
        return Rejection(
            RejectReason.UNKNOWN_EVENT_TYPE, f"event_type: {event_type[:64]!r} is not a known type"
        )
    try:
        fields = _EventFields.model_validate(value)
    except ValidationError as error:
        return _first_error(error)
    return check_rules(fields, now_ms=now_ms, stages=stages, late_ms=late_ms)


class EventFields(Protocol):
    """The typed fields of one event, whoever checked their types (pydantic here, or the
    worker's msgspec fast path): what ``check_rules`` reads."""

    event_id: str
    event_type: str
    occurred_at: str | int
    artifact_id: str
    organization_id: str | None
    stage: str | None
    duration_ms: float | None
    ai_cost_usd: float | None
    error_code: str | None
    schema_version: int


def check_rules(
    fields: EventFields, *, now_ms: int, stages: frozenset[str], late_ms: int | None = None
) -> PipelineEvent | Rejection:
    """The rules of CONTRACT §3 beyond field types: stage, timestamp, time window."""
    event_type = _EVENT_TYPE_BY_NAME[fields.event_type]
    if event_type in STAGE_EVENT_TYPES:
        if fields.stage is None:
            return Rejection(RejectReason.MISSING_FIELD, f"stage: required for {event_type}")
        if fields.stage not in stages:
            return Rejection(
                RejectReason.UNKNOWN_STAGE,
                f"stage: {fields.stage[:64]!r} is not a configured stage",
            )
    elif fields.stage is not None:
        return Rejection(RejectReason.INVALID_FIELD, f"stage: must be absent for {event_type}")
    occurred_at_ms = parse_occurred_at(fields.occurred_at)
    if occurred_at_ms is None:
        return Rejection(
            RejectReason.INVALID_FIELD,
            "occurred_at: not an RFC 3339 timestamp with offset or integer epoch milliseconds",
        )
    if occurred_at_ms > now_ms + FUTURE_TOLERANCE_MS:
        return Rejection(
            RejectReason.FUTURE_TIMESTAMP, "occurred_at: more than 5 minutes in the future"
        )
    if occurred_at_ms < (now_ms if late_ms is None else late_ms) - RAW_RETENTION_MS:
        return Rejection(RejectReason.TOO_LATE, "occurred_at: older than the 48 hour retention")
    return PipelineEvent(
        event_id=fields.event_id,
        event_type=event_type,
        occurred_at_ms=occurred_at_ms,
        artifact_id=fields.artifact_id,
        organization_id=fields.organization_id,
        stage=fields.stage,
        duration_ms=fields.duration_ms,
        ai_cost_usd=fields.ai_cost_usd,
        error_code=fields.error_code,
        schema_version=fields.schema_version,
    )


def _kind(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
    return type(value).__name__
