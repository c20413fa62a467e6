"""The query API over real Redis and the real ClickHouse engine: auth, parameters, queries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from aggregators.closing import snapshots
from aggregators.directory import organizations
from aggregators.query.api import create_app
from aggregators.query.auth import mint
from aggregators.snapshot_rows import EMPTY_ARTIFACTS, artifact_metrics, snapshot_rows
from voicemon import keys
from voicemon.settings import DEFAULT_STAGES, Settings
from voicemon.store import Client
from voicemon.windows import HOUR_MS

SECRET = "test-secret-of-a-decent-length-0123456789"


class CountingStore:
    """The real store client, counting the queries it is asked (pure wrapper, no fake)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.queries = 0

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return self.client.query(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def settings(stack: Settings) -> Settings:
    redis_url = stack.redis_url.get_secret_value().rsplit("/", 1)[0] + "/11"
    return Settings(redis_url=redis_url, jwt_secret=SECRET)


@pytest.fixture
def counting_store(clean_store: Client) -> CountingStore:
    return CountingStore(clean_store)


@pytest.fixture
def api(settings: Settings, counting_store: CountingStore) -> Iterator[TestClient]:
    SyncRedis.from_url(settings.redis_url.get_secret_value()).flushdb()
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    with TestClient(create_app(settings, counting_store, redis)) as client:
        yield client


def token(**claims: Any) -> dict[str, str]:
    body = {"sub": "tester", "iss": "voicemon", "aud": "voicemon-api",
            "exp": int(time.time()) + 600} | claims  # fmt: skip
    return {"Authorization": f"Bearer {jwt.encode(body, SECRET, algorithm='HS256')}"}


STAFF = {"platform_staff": True}
ORG_A = {"platform_staff": False, "organization_id": "org-a"}


def seed_hours(store: Client, hours: list[int], orgs: list[str]) -> None:
    for hour in hours:
        artifacts = {
            org: artifact_metrics(
                dict(EMPTY_ARTIFACTS)
                | {
                    "artifacts_received": 3 + i,
                    "artifacts_failed": 1,
                    "artifacts_completed": 2,
                    "latency_samples": 2,
                    "latency_sum": 300.0,
                    "latency_sketch": {700: 2},
                },
                exact=False,
            )
            for i, org in enumerate(["", *orgs])
        }
        snapshots.write(
            store,
            snapshot_rows("hourly", hour, HOUR_MS, artifacts, {}, DEFAULT_STAGES, 1, hour),
        )


def last_hours(count: int) -> list[int]:
    now = int(time.time() * 1000)
    return [now - now % HOUR_MS - i * HOUR_MS for i in range(1, count + 1)]


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ({"Authorization": "Bearer not.a.jwt"}, 401),
        (
            {
                "Authorization": "Bearer "
                + mint(
                    "another-secret-that-is-long-enough-000",
                    "x",
                    staff=True,
                    organization_id=None,
                    ttl_s=60,
                )
            },
            401,
        ),
        (token(platform_staff=True, exp=int(time.time()) - 5), 401),
        (
            {"Authorization": "Bearer " + jwt.encode({"sub": "x", "platform_staff": True}, SECRET)},
            401,
        ),
        (token(**ORG_A), 403),
        (token(platform_staff=False, organization_id="org-b"), 403),
        (token(**STAFF), 200),
    ],
)
def test_auth_matrix_on_platform_scope(
    api: TestClient, headers: dict[str, str], status: int
) -> None:
    response = api.get("/v1/metrics/realtime", headers=headers)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["error"]
        assert SECRET not in response.text


def test_an_organization_token_reads_its_own_organization_only(api: TestClient) -> None:
    ok = api.get(
        "/v1/metrics/realtime", params={"organization_id": "org-a"}, headers=token(**ORG_A)
    )
    assert ok.status_code == 200 and ok.json()["organization_id"] == "org-a"
    other = api.get(
        "/v1/metrics/realtime", params={"organization_id": "org-b"}, headers=token(**ORG_A)
    )
    assert other.status_code == 403
    orgs = api.get(
        "/v1/metrics/organizations",
        headers=token(**ORG_A),
        params={"period": "hourly", "start": iso(0), "end": iso(1000)},
    )
    assert orgs.status_code == 403


def test_realtime_reads_redis_and_a_quiet_scope_reads_zeros(
    api: TestClient, settings: Settings
) -> None:
    redis = SyncRedis.from_url(settings.redis_url.get_secret_value())
    minute = int(time.time() * 1000) // 60_000
    redis.zadd(
        keys.rolling_counter("org-a", minute), mapping={"received": 4, "failed": 1, "completed": 3}
    )
    body = api.get(
        "/v1/metrics/realtime", params={"organization_id": "org-a"}, headers=token(**STAFF)
    ).json()
    assert (body["artifacts_received"], body["failure_rate"]) == (4, 0.25)
    quiet = api.get(
        "/v1/metrics/realtime", params={"organization_id": "org-q"}, headers=token(**STAFF)
    ).json()
    assert quiet["artifacts_received"] == 0 and quiet["failure_rate"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"period": "weekly", "start": "0", "end": "1"},
        {"period": "hourly", "start": "yesterday", "end": "1"},
        {"period": "hourly", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        {"period": "hourly", "start": "2026-01-01T00:00:00Z", "end": "2026-01-09T00:00:00Z"},
        {"period": "daily", "start": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z"},
        {"period": "hourly", "start": "0", "end": "1", "organization_id": "x' OR 1=1 --"},
        {"period": "hourly", "start": "0", "end": "1", "organization_id": "o" * 129},
        {"period": "hourly", "start": "0'; DROP TABLE voicemon.snapshots; --", "end": "1"},
        {"period": "hourly", "start": "9" * 5000, "end": "1"},
        {"period": "hourly", "end": "1"},
    ],
)
def test_bad_parameters_are_400_with_a_message(api: TestClient, params: dict[str, str]) -> None:
    for path in ("/v1/metrics/history", "/v1/metrics/stages"):
        response = api.get(path, params=params, headers=token(**STAFF))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error.split(":")[0] in {*params, "range", "period", "start", "end"}, error
        assert "pattern" not in error and "[" not in error and "\\" not in error, error
    response = api.get(
        "/v1/metrics/organizations", params=params | {"limit": "0"}, headers=token(**STAFF)
    )
    assert response.status_code == 400


def test_history_rows_and_summary_come_from_snapshots(api: TestClient, clean_store: Client) -> None:
    hours = last_hours(3)
    seed_hours(clean_store, hours, ["org-a"])
    body = api.get(
        "/v1/metrics/history",
        headers=token(**ORG_A),
        params={
            "period": "hourly",
            "start": iso(hours[-1]),
            "end": str(hours[0]),
            "organization_id": "org-a",
        },
    ).json()
    assert [row["artifacts_received"] for row in body["rows"]] == [4, 4, 4]
    assert body["summary"]["artifacts_received"] == 12
    assert body["summary"]["failure_rate"] == pytest.approx(1 / 3)
    assert body["summary"]["avg_latency_ms"] == pytest.approx(150.0)
    stages = api.get(
        "/v1/metrics/stages",
        headers=token(**STAFF),
        params={"period": "hourly", "start": iso(hours[-1]), "end": iso(hours[0])},
    ).json()
    assert set(stages["summary"]) == set(DEFAULT_STAGES)
    assert len(stages["rows"]) == 3 * len(DEFAULT_STAGES)


@pytest.mark.parametrize("count", [5, 150])
def test_organizations_use_one_batched_name_lookup(
    api: TestClient, clean_store: Client, counting_store: CountingStore, count: int
) -> None:
    hours = last_hours(2)
    orgs = [f"org-{i:03d}" for i in range(count)]
    seed_hours(clean_store, hours, orgs)
    organizations.upsert(clean_store, {org: f"Name {org}" for org in orgs[1:]})
    counting_store.queries = 0
    body = api.get(
        "/v1/metrics/organizations",
        headers=token(**STAFF),
        params={"period": "hourly", "start": iso(hours[-1]), "end": iso(hours[0]), "limit": 1000},
    ).json()
    assert counting_store.queries == 2  # the ranking and one name lookup, whatever the count
    rows = body["organizations"]
    assert len(rows) == count and rows[0]["artifacts_received"] >= rows[-1]["artifacts_received"]
    names = {row["organization_id"]: row["name"] for row in rows}
    assert names["org-000"] == "Unknown" and names[orgs[-1]] == f"Name {orgs[-1]}"


def test_health_readiness_metrics_and_openapi(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {
        "ready": True,
        "checks": {"redis": True, "clickhouse": True},
    }
    api.get("/v1/metrics/realtime")
    assert (
        b'voicemon_api_requests_total{route="/v1/metrics/realtime",status="401"}'
        in api.get("/metrics").content
    )
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/v1/metrics/realtime",
        "/v1/metrics/history",
        "/v1/metrics/stages",
        "/v1/metrics/organizations",
    }


def test_range_bounds_hold_to_the_millisecond_for_rows_and_summaries(
    api: TestClient, clean_store: Client
) -> None:
    hours = last_hours(3)  # newest first
    seed_hours(clean_store, hours, ["org-a"])
    start = f"{iso(hours[-1])[:-1]}.500Z"  # half a second after the oldest hour starts
    params = {"period": "hourly", "start": start, "end": str(hours[0])}
    body = api.get("/v1/metrics/history", headers=token(**STAFF), params=params).json()
    assert len(body["rows"]) == 2 and body["summary"]["artifacts_received"] == 2 * 3
    ranked = api.get("/v1/metrics/organizations", headers=token(**STAFF), params=params).json()
    assert [row["artifacts_received"] for row in ranked["organizations"]] == [2 * 4]
    just_before = {**params, "end": str(hours[0] - 1)}  # a millisecond before the newest hour
    body = api.get("/v1/metrics/history", headers=token(**STAFF), params=just_before).json()
    assert len(body["rows"]) == 1 and body["summary"]["artifacts_received"] == 3


def test_every_timestamp_is_rfc3339_utc_with_z_and_platform_rows_have_no_organization(
    api: TestClient, clean_store: Client
) -> None:
    hours = last_hours(2)
    seed_hours(clean_store, hours, ["org-a"])
    params = {"period": "hourly", "start": iso(hours[-1]), "end": iso(hours[0])}
    for path in ("/v1/metrics/history", "/v1/metrics/stages", "/v1/metrics/organizations"):
        body = api.get(path, headers=token(**STAFF), params=params).json()
        stamps = [body["start"], body["end"]]
        for row in body.get("rows", []):
            stamps += [row["period_start"], row["period_end"], row["computed_at"]]
            assert row["organization_id"] is None  # the platform's rows
        assert stamps and all(s.endswith("Z") and "+" not in s for s in stamps), (path, stamps)
        datetime.fromisoformat(body["start"])  # RFC 3339
    org = api.get("/v1/metrics/history", headers=token(**STAFF),
                  params={**params, "organization_id": "org-a"}).json()  # fmt: skip
    assert {row["organization_id"] for row in org["rows"]} == {"org-a"}
    realtime = api.get("/v1/metrics/realtime", headers=token(**STAFF)).json()
    assert all(realtime[k].endswith("Z") for k in ("window_start", "window_end", "as_of"))


@pytest.mark.parametrize(("docs", "metrics"), [(False, True), (True, False), (True, True)])
def test_docs_and_metrics_only_where_the_settings_say(
    settings: Settings, clean_store: Client, docs: bool, metrics: bool
) -> None:
    configured = settings.model_copy(update={"api_docs_enabled": docs,
                                             "api_metrics_enabled": metrics})  # fmt: skip
    redis = Redis.from_url(configured.redis_url.get_secret_value())
    with TestClient(create_app(configured, clean_store, redis)) as client:
        for path in ("/docs", "/redoc"):
            assert client.get(path).status_code == (200 if docs else 404), path
        assert client.get("/metrics").status_code == (200 if metrics else 404)
        assert client.get("/openapi.json").status_code == 200  # the schema stays
        assert client.get("/healthz").status_code == 200


def test_rotated_keys_issuer_audience_and_lifetime_over_http(
    settings: Settings, clean_store: Client
) -> None:
    old, new = "the-old-signing-key-0123456789abcdefgh", "the-new-signing-key-0123456789abcdefgh"
    both = settings.model_copy(update={"jwt_secret": None, "jwt_keys": {
        "old": SecretStr(old), "new": SecretStr(new)}})  # fmt: skip
    redis = Redis.from_url(both.redis_url.get_secret_value())
    with TestClient(create_app(both, clean_store, redis)) as client:

        def status(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            return client.get("/v1/metrics/realtime", headers=headers).status_code

        for kid, key in (("old", old), ("new", new)):
            assert (
                status(mint(key, "op", staff=True, organization_id=None, ttl_s=60, kid=kid)) == 200
            )
        assert status(mint(new, "op", staff=True, organization_id=None, ttl_s=60, kid="old")) == 401
        assert status(mint(new, "op", staff=True, organization_id=None, ttl_s=60,
                           kid="new", issuer="elsewhere")) == 401  # fmt: skip
        assert status(mint(new, "op", staff=True, organization_id=None, ttl_s=60,
                           kid="new", audience="another-api")) == 401  # fmt: skip
        day = both.jwt_max_ttl_staff_seconds
        assert (
            status(mint(new, "op", staff=True, organization_id=None, ttl_s=day, kid="new")) == 200
        )
        assert status(mint(new, "op", staff=True, organization_id=None, ttl_s=day + 60,
                           kid="new")) == 401  # fmt: skip
