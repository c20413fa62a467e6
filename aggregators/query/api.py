"""The query service of CONTRACT §7: FastAPI over the query functions, bearer-token auth.

Real-time reads Redis only; history, stages and organizations read snapshots only. Every
client mistake is a 400/401/403 with a message; a dependency outage is a 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from datetime import datetime
from types import GenericAlias
from typing import Annotated, Any, Literal, get_type_hints

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, create_model
from redis.exceptions import RedisError

from aggregators import snapshot_rows
from aggregators.query import queries
from aggregators.query.auth import Forbidden, Principal, Unauthorized, Verifier, authorize
from aggregators.query.auth import require_staff as _require_staff
from aggregators.query.realtime import read_realtime_async
from aggregators.snapshot_rows import SKETCHES
from voicemon import health, telemetry
from voicemon.event import OrganizationId
from voicemon.redis_client import AsyncRedis as Redis
from voicemon.settings import Settings
from voicemon.store import Client

log = logging.getLogger("voicemon.api")

OrgId = Annotated[OrganizationId | None, Query()]
Period = Annotated[Literal["hourly", "daily"], Query()]
Time = Annotated[
    str,
    Query(
        min_length=1,
        max_length=40,
        description="RFC 3339 time with offset, or epoch milliseconds",
    ),
]


# Every timestamp of a response: RFC 3339, UTC, with Z (CONTRACT §7); the schema says so, and
# schemathesis checks each response against it.
UTC_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
_UTC = "RFC 3339 time in UTC, with Z"
UtcStamp = Annotated[
    str, Field(pattern=UTC_Z, description=_UTC, json_schema_extra={"format": "date-time"})
]
UtcTime = Annotated[datetime, Field(description=_UTC, json_schema_extra={"pattern": UTC_Z})]


class ErrorBody(BaseModel):
    error: str


class StageRealtime(BaseModel):
    started: int
    completed: int
    failed: int
    failure_rate: float
    avg_duration_ms: float


class Realtime(BaseModel):
    organization_id: str | None
    window_start: UtcStamp
    window_end: UtcStamp
    as_of: UtcStamp
    artifacts_received: int
    artifacts_completed: int
    artifacts_failed: int
    failure_rate: float
    avg_latency_ms: float
    ai_cost_usd: float
    stages: dict[str, StageRealtime]


def _shown(row_type: type[Any]) -> dict[str, Any]:
    """The fields of a snapshot row type but the sketches, as pydantic field definitions."""
    hints = get_type_hints(row_type)
    return {
        f.name: (UtcTime if hints[f.name] is datetime else hints[f.name], ...)
        for f in fields(row_type)
        if f.name not in SKETCHES
    }


def _model(model_name: str, row_type: type[Any], **extra: Any) -> Any:
    """The response model of a snapshot row type: its fields but the sketches."""
    return create_model(model_name, **(_shown(row_type) | extra))


def _list_of(model: Any) -> Any:
    return GenericAlias(list, (model,))


ArtifactSummary = _model("ArtifactMetrics", snapshot_rows.ArtifactMetrics)
PlatformIsNull = (str | None, Field(description="null for the platform-wide row"))
SnapshotRow = _model("SnapshotRow", snapshot_rows.Snapshot, organization_id=PlatformIsNull)
StageSummary = _model("StageMetrics", snapshot_rows.StageMetrics)
StageRow = _model("StageRow", snapshot_rows.StageSnapshot, organization_id=PlatformIsNull)
OrganizationRow = create_model(  # who first, as the query's rows (and the CLI) list it
    "OrganizationRow",
    **({"organization_id": (str, ...), "name": (str, ...)} | _shown(snapshot_rows.ArtifactMetrics)),
)


class Range(BaseModel):
    period: str
    organization_id: str | None
    start: UtcTime
    end: UtcTime


def _ranged(model_name: str, **extra: Any) -> Any:
    return create_model(model_name, __base__=Range, **extra)


History = _ranged("History", rows=(_list_of(SnapshotRow), ...), summary=(ArtifactSummary, ...))
Stages = _ranged(
    "Stages",
    rows=(_list_of(StageRow), ...),
    summary=(GenericAlias(dict, (str, StageSummary)), ...),
)
Organizations = _ranged("Organizations", organizations=(_list_of(OrganizationRow), ...))


def _principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    verifier: Verifier = request.app.state.verifier
    return verifier.principal(authorization)


Caller = Annotated[Principal, Depends(_principal)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 503)
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings, store: Client, redis: Redis) -> FastAPI:
    """The API bound to its store and Redis clients (opened by the caller)."""
    verifier = Verifier.of(settings)  # no key configured: ValueError naming the settings
    docs = settings.api_docs_enabled  # the interactive pages only where a setting says so
    app = FastAPI(
        title="voicemon",
        version="1",
        description=__doc__,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.verifier = verifier

    async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(function, *args)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in error.errors()
        )
        return _error(400, problems[:500])

    @app.exception_handler(queries.QueryError)
    async def bad_query(request: Request, error: queries.QueryError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, error: Unauthorized) -> JSONResponse:
        response = _error(401, str(error))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> JSONResponse:
        return _error(403, str(error))

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, error: RedisError) -> JSONResponse:
        return _error(503, "Redis unavailable; retry later")

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # a store outage or a bug: never a stack trace to the client
            log.exception("request failed: %s", request.url.path)
            response = _error(503, "store unavailable; retry later")
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        telemetry.API_REQUESTS.labels(path, str(response.status_code)).inc()
        telemetry.API_SECONDS.labels(path).observe(time.perf_counter() - started)
        return response

    @app.get("/v1/metrics/realtime", response_model=Realtime, responses=_ERRORS)
    async def realtime(caller: Caller, organization_id: OrgId = None) -> Any:
        authorize(caller, organization_id)
        return await read_realtime_async(redis, organization_id, settings.stages)

    @app.get("/v1/metrics/history", response_model=History, responses=_ERRORS)
    async def history(
        caller: Caller, period: Period, start: Time, end: Time, organization_id: OrgId = None
    ) -> Any:
        authorize(caller, organization_id)
        start_ms, end_ms = queries.parse_time(start, "start"), queries.parse_time(end, "end")
        return await in_thread(queries.history, store, period, start_ms, end_ms, organization_id)

    @app.get("/v1/metrics/stages", response_model=Stages, responses=_ERRORS)
    async def stages(
        caller: Caller, period: Period, start: Time, end: Time, organization_id: OrgId = None
    ) -> Any:
        authorize(caller, organization_id)
        start_ms, end_ms = queries.parse_time(start, "start"), queries.parse_time(end, "end")
        return await in_thread(queries.stages, store, period, start_ms, end_ms, organization_id)

    @app.get("/v1/metrics/organizations", response_model=Organizations, responses=_ERRORS)
    async def organizations(
        caller: Caller,
        period: Period,
        start: Time,
        end: Time,
        limit: Annotated[int, Query(ge=1, le=queries.MAX_ORGANIZATIONS)] = 100,
    ) -> Any:
        _require_staff(caller)
        start_ms, end_ms = queries.parse_time(start, "start"), queries.parse_time(end, "end")
        return await in_thread(queries.organizations, store, period, start_ms, end_ms, limit)

    async def probe(request: Request) -> Response:
        found = await health.probe(request.url.path, lambda: health.dependency_checks(redis, store))
        if found.body is None:
            return JSONResponse(found.json, status_code=found.status)
        return Response(found.body, media_type=found.media_type)

    for path in health.PROBE_PATHS:
        if path != health.METRICS_PATH or settings.api_metrics_enabled:
            app.add_api_route(path, probe, methods=["GET"], include_in_schema=False)

    return app
