"""Where ``voicemon metrics`` reads the four queries of CONTRACT §7.

``Direct`` reads Redis and the store with the operator's settings; ``OverApi`` asks the
HTTP API with a bearer token, so staff need no infrastructure credentials. Both return the
same JSON-shaped values (times as RFC 3339 strings with ``Z``, numbers as JSON numbers), so
tables and ``--json`` print alike whichever answered.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from aggregators.query import queries
from aggregators.query.realtime import read_realtime
from runtime.cli import preflight
from runtime.cli.common import open_store, settings
from runtime.cli.remote import Api


def as_json(value: Any) -> Any:
    """``value`` as it reads once sent as JSON: what the API's client gets."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS))


def time_range(period: str, start: str, end: str) -> tuple[int, int]:
    """``--start`` and ``--end`` as epoch ms, checked against ``period`` (raises QueryError
    naming the bad one, with the same words whichever source answers)."""
    start_ms, end_ms = queries.parse_time(start, "--start"), queries.parse_time(end, "--end")
    queries.check_range(period, start_ms, end_ms)
    return start_ms, end_ms


class MetricsSource(Protocol):
    def realtime(self, org: str | None) -> Any: ...

    def history(self, period: str, start: str, end: str, org: str | None) -> Any: ...

    def stages(self, period: str, start: str, end: str, org: str | None) -> Any: ...

    def organizations(self, period: str, start: str, end: str, limit: int) -> Any: ...


class Direct:
    """Redis and the store, as the worker's settings reach them (operators)."""

    def realtime(self, org: str | None) -> Any:
        config = settings()
        redis = preflight.redis_client(config)
        try:
            return as_json(read_realtime(redis, org, config.stages))
        finally:
            redis.close()

    def history(self, period: str, start: str, end: str, org: str | None) -> Any:
        start_ms, end_ms = time_range(period, start, end)
        return as_json(queries.history(open_store(), period, start_ms, end_ms, org))

    def stages(self, period: str, start: str, end: str, org: str | None) -> Any:
        start_ms, end_ms = time_range(period, start, end)
        return as_json(queries.stages(open_store(), period, start_ms, end_ms, org))

    def organizations(self, period: str, start: str, end: str, limit: int) -> Any:
        start_ms, end_ms = time_range(period, start, end)
        return as_json(queries.organizations(open_store(), period, start_ms, end_ms, limit))


class OverApi:
    """The query API (CONTRACT §7), with the caller's token (staff, or one organization)."""

    def __init__(self, url: str, token: str) -> None:
        self.api = Api(url, token)

    def realtime(self, org: str | None) -> Any:
        return self.api.get("/v1/metrics/realtime", {"organization_id": org})

    def _ranged(self, path: str, period: str, start: str, end: str, **more: Any) -> Any:
        start_ms, end_ms = time_range(period, start, end)  # same checks and words as direct
        return self.api.get(path, {"period": period, "start": start_ms, "end": end_ms, **more})

    def history(self, period: str, start: str, end: str, org: str | None) -> Any:
        return self._ranged("/v1/metrics/history", period, start, end, organization_id=org)

    def stages(self, period: str, start: str, end: str, org: str | None) -> Any:
        return self._ranged("/v1/metrics/stages", period, start, end, organization_id=org)

    def organizations(self, period: str, start: str, end: str, limit: int) -> Any:
        return self._ranged("/v1/metrics/organizations", period, start, end, limit=limit)
