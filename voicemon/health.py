"""Readiness, one definition for the worker and the API: each dependency answers within
``READINESS_TIMEOUT_S``, and no retrying loop is in an outage.

Each retrying loop (ingest, the organization directory, …) has its own ``Outage``: set while
its work fails, cleared when it succeeds, so one loop's recovery never hides another's
outage and one loop's blip never outlives its own recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from voicemon import telemetry
from voicemon.redis_client import AsyncRedis as Redis
from voicemon.store import Client

log = logging.getLogger("voicemon.health")
READINESS_TIMEOUT_S = 2.0
T = TypeVar("T")


DEPENDENCIES = ("redis", "clickhouse", "kafka")  # what dependency_of names, besides "other"


def dependency_of(error: BaseException | None) -> str:
    """Which dependency an error came from, by the library that raised it."""
    module = type(error).__module__
    for library, dependency in (("redis", "redis"), ("clickhouse", "clickhouse"),
                                ("chdb", "clickhouse"), ("kafka", "kafka"),
                                ("cimpl", "kafka")):  # fmt: skip
        if library in module:
            return dependency
    return "kafka" if "DeliveryError" in type(error).__name__ else "other"


@dataclass(slots=True)
class Outage:
    """The outage state of one retrying loop; logs once when it begins and once when it ends,
    and sets ``voicemon_ingest_paused{dependency}`` meanwhile."""

    name: str
    reason: str | None = None
    dependency: str | None = None

    @property
    def active(self) -> bool:
        return self.reason is not None

    def begin(self, error: BaseException | None) -> None:
        reason = f"{type(error).__name__}: {error}"[:300]
        if self.reason is None:
            log.error("%s paused, retrying: %s", self.name, reason)
        dependency = dependency_of(error)
        if self.dependency is not None:
            _paused(self.dependency, self.name, False)
        _paused(dependency, self.name, True)
        self.reason, self.dependency = reason, dependency

    def end(self) -> None:
        if self.reason is not None:
            log.warning("%s resumed", self.name)
            self.reason = None
        if self.dependency is not None:
            _paused(self.dependency, self.name, False)
            self.dependency = None


# Which loops each dependency pauses: the gauge is 1 while any of them is paused by it, so one
# loop's recovery never clears another's outage of the same dependency.
_PAUSED_LOOPS: dict[str, set[str]] = {}


def _paused(dependency: str, loop: str, paused: bool) -> None:
    loops = _PAUSED_LOOPS.setdefault(dependency, set())
    if paused:
        loops.add(loop)
    else:
        loops.discard(loop)
    telemetry.INGEST_PAUSED.labels(dependency).set(1 if loops else 0)


async def until_done(outage: Outage, work: Callable[[], Awaitable[T]]) -> T:
    """``work()``, retried with exponential backoff (up to 15 s apart) while it fails; the
    outage is set meanwhile and cleared once it succeeds."""

    def on_retry(state: RetryCallState) -> None:
        outage.begin(state.outcome.exception() if state.outcome else None)

    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.25, max=15), before_sleep=on_retry, reraise=True
    ):
        with attempt:
            result = await work()
    outage.end()
    return result


async def _answers(probe: Awaitable[Any]) -> bool:
    try:
        return bool(await asyncio.wait_for(probe, READINESS_TIMEOUT_S))
    except Exception:
        return False


async def dependency_checks(redis: Redis | None, store: Client | None) -> dict[str, bool]:
    """Redis and the store each answered within the timeout (no store to check: True)."""
    return {
        "redis": redis is not None and await _answers(redis.ping()),
        "clickhouse": store is None or await _answers(asyncio.to_thread(store.command, "SELECT 1")),
    }


# The probe pages, one definition for the worker's web server and the API: each server only
# routes a path to ``probe`` and sends its answer in its own response type.
METRICS_PATH = "/metrics"
PROBE_PATHS = (METRICS_PATH, "/healthz", "/readyz")


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """A probe's answer: a JSON value (``json``) or, for /metrics, bytes of ``media_type``."""

    status: int = 200
    json: dict[str, Any] = field(default_factory=dict)
    body: bytes | None = None
    media_type: str = CONTENT_TYPE_LATEST


async def probe(path: str, checks: Callable[[], Awaitable[dict[str, bool]]]) -> ProbeAnswer:
    """/metrics: every metric in Prometheus's text format; /healthz: the process answers;
    /readyz: 200 when every one of ``checks`` passes, else 503, with the checks."""
    if path == METRICS_PATH:
        return ProbeAnswer(body=generate_latest())
    if path != "/readyz":
        return ProbeAnswer(json={"status": "ok"})
    found = await checks()
    ready = all(found.values())
    return ProbeAnswer(200 if ready else 503, {"ready": ready, "checks": found})
