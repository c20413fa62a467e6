"""The pipeline event of CONTRACT §3, as the worker imports it: the schema, the reason codes
and the validator live in ``voicemon_producer.event`` (shipped with the light producer
distribution too), so the worker and every producer check events with the same code."""

from voicemon_producer.event import (
    DEFAULT_STAGES,
    FUTURE_TOLERANCE_MS,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    ORGANIZATION_ID,
    ORGANIZATION_ID_RULE,
    RAW_RETENTION_MS,
    STAGE_EVENT_TYPES,
    EventFields,
    EventType,
    OrganizationId,
    PipelineEvent,
    Rejection,
    RejectReason,
    check_rules,
    decision_time_ms,
    late_rule_time_ms,
    parse_occurred_at,
    validate_event,
)

__all__ = [
    "DEFAULT_STAGES",
    "FUTURE_TOLERANCE_MS",
    "MAX_BATCH_EVENTS",
    "MAX_EVENT_BYTES",
    "MAX_MESSAGE_BYTES",
    "ORGANIZATION_ID",
    "ORGANIZATION_ID_RULE",
    "RAW_RETENTION_MS",
    "STAGE_EVENT_TYPES",
    "EventFields",
    "EventType",
    "OrganizationId",
    "PipelineEvent",
    "RejectReason",
    "Rejection",
    "check_rules",
    "decision_time_ms",
    "late_rule_time_ms",
    "parse_occurred_at",
    "validate_event",
]
