"""``voicemon metrics ... --api URL --token T`` against the real API (``voicemon api`` as its
own process, on real Redis and a chDB store): the same tables and JSON as direct mode on
the same data, and an API refusal is one sentence.

Direct mode runs first (each run opens the store, then lets go of it); then the API
process owns the store and the ``--api`` runs ask it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis import Redis

from aggregators.query.auth import mint
from tests.ports import free_port
from voicemon import keys
from voicemon.settings import Settings
from voicemon.windows import HOUR_MS, MINUTE_MS

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cli-over-api-test-secret-0123456789abcdef"
REDIS_DB = 13
ORGS = ("org-a", "org-b")
STAGES = ("transcription", "claims_extraction", "entity_resolution", "draft_generation")


def seed_store(path: str, first_hour_ms: int, hours: int) -> None:
    """Snapshots of ``hours`` hours (platform, two organizations, every stage) and names."""
    from aggregators.closing import snapshots
    from aggregators.directory import organizations
    from aggregators.snapshot_rows import (
        EMPTY_ARTIFACTS,
        EMPTY_STAGE,
        artifact_metrics,
        snapshot_rows,
        stage_metrics,
    )
    from voicemon.store import connect
    from voicemon.store_migrations import migrate

    client = connect(f"chdb://{path}")
    migrate(client)
    for index in range(hours):
        hour = first_hour_ms + index * HOUR_MS
        artifacts = {
            org: artifact_metrics(
                dict(EMPTY_ARTIFACTS)
                | {"artifacts_received": 10 + 7 * n + index, "artifacts_completed": 6 + n,
                   "artifacts_failed": 1 + n % 2, "latency_samples": 6 + n,
                   "latency_sum": 1234.5 * (n + 1), "latency_sketch": {700 + n: 6 + n},
                   "ai_cost_usd": 0.125 * (n + 1)},
                exact=False,
            )
            for n, org in enumerate(["", *ORGS])
        }  # fmt: skip
        stage_rows = {
            (org, stage): stage_metrics(
                dict(EMPTY_STAGE)
                | {"started": 5 + s, "completed": 4 + s, "failed": 1, "duration_samples": 4 + s,
                   "duration_sum": 100.0 * (s + 1), "duration_sketch": {600 + s: 4 + s}},
                exact=False,
            )
            for org in ["", *ORGS]
            for s, stage in enumerate(STAGES)
        }  # fmt: skip
        rows = snapshot_rows("hourly", hour, HOUR_MS, artifacts, stage_rows, STAGES, 1, hour)
        snapshots.write(client, rows)
    organizations.upsert(client, {"org-a": "Acme Transcripts"})


def seed_redis(url: str) -> None:
    """Counters in the current minute's bucket of the platform and of org-a."""
    redis = Redis.from_url(url)
    redis.flushdb()
    minute = int(time.time() * 1000) // MINUTE_MS
    stage = "stage:transcription:"
    counters = {"received": 12, "completed": 9, "failed": 2, "latency_sum": 4500, "latency_n": 9,
                "cost_sum": 1.75, f"{stage}started": 12, f"{stage}completed": 10,
                f"{stage}failed": 1, f"{stage}duration_sum": 2000,
                f"{stage}duration_n": 10}  # fmt: skip
    for org in (None, "org-a"):
        redis.zadd(keys.rolling_counter(org, minute), mapping=counters)
        redis.expire(keys.rolling_counter(org, minute), 3 * 3600)


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


@dataclass
class Served:
    url: str
    env: dict[str, str]
    direct: dict[str, Run]
    remote: dict[str, Run]


def cli(args: tuple[str, ...], env: Mapping[str, str]) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *args], cwd=ROOT, env=dict(env),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return Run(done.returncode, done.stdout, done.stderr)


def token(**claims: Any) -> str:
    staff = bool(claims.get("staff"))
    return mint(SECRET, "cli-test", staff=staff, organization_id=claims.get("org"), ttl_s=600)


@pytest.fixture(scope="module")
def served(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("cli-api")
    now = int(time.time() * 1000)
    first_hour = now - now % HOUR_MS - 3 * HOUR_MS
    span = ("--start", iso(first_hour), "--end", iso(first_hour + 2 * HOUR_MS))
    queries = {
        "realtime": ("metrics", "realtime"),
        "realtime-json": ("metrics", "realtime", "--json"),
        "realtime-org-json": ("metrics", "realtime", "--org", "org-a", "--json"),
        "history": ("metrics", "history", *span),
        "history-json": ("metrics", "history", *span, "--json"),
        "history-org-json": ("metrics", "history", *span, "--org", "org-a", "--json"),
        "stages": ("metrics", "stages", *span),
        "stages-json": ("metrics", "stages", *span, "--json"),
        "orgs": ("metrics", "orgs", *span, "--period", "hourly"),
        "orgs-json": ("metrics", "orgs", *span, "--period", "hourly", "--json"),
    }
    redis_url = stack.redis_url.get_secret_value().rsplit("/", 1)[0] + f"/{REDIS_DB}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOICEMON_")}
    env |= {"VOICEMON_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "VOICEMON_REDIS_URL": redis_url,
            "VOICEMON_CLICKHOUSE_DSN": f"chdb://{workdir / 'store'}",
            "VOICEMON_JWT_SECRET": SECRET, "COLUMNS": "100"}  # fmt: skip
    seeding = ("import sys; from tests.integration.test_cli_api import seed_store; "
               "seed_store(sys.argv[1], int(sys.argv[2]), 3)")  # fmt: skip
    subprocess.run(
        [sys.executable, "-c", seeding, str(workdir / "store"), str(first_hour)],
        cwd=ROOT, env=env, check=True, timeout=120,
    )  # fmt: skip
    seed_redis(redis_url)
    direct = {name: cli(args, env) for name, args in queries.items()}  # one store owner at a time

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "api.log").open("w")
    api = subprocess.Popen(
        [sys.executable, "-m", "runtime", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(url, api)
        staff = ("--api", url, "--token", token(staff=True))
        with ThreadPoolExecutor(4) as pool:
            asked = {name: pool.submit(cli, (*args, *staff), env) for name, args in queries.items()}
            remote = {name: future.result() for name, future in asked.items()}
        yield Served(url, env, direct, remote)
    finally:
        api.terminate()
        api.wait(timeout=30)
        log.close()


def _wait_ready(url: str, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert api.poll() is None, "the API process ended"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("the API did not start")


REALTIME_TIMES = ("as_of", "window_start", "window_end")
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


@pytest.mark.parametrize(
    "name",
    ["realtime", "realtime-json", "realtime-org-json", "history", "history-json",
     "history-org-json", "stages", "stages-json", "orgs", "orgs-json"],
)  # fmt: skip
def test_over_the_api_prints_what_direct_mode_prints(served: Served, name: str) -> None:
    direct, remote = served.direct[name], served.remote[name]
    assert direct.code == 0, direct.stderr
    assert remote.code == 0, remote.stderr
    assert remote.stderr == ""
    if not name.startswith("realtime"):
        assert remote.stdout == direct.stdout
        assert "Acme" in remote.stdout or not name.startswith("orgs")
        return
    # The real-time view is read at two instants: only its clock fields may differ.
    if name.endswith("json"):
        mine, theirs = orjson.loads(direct.stdout), orjson.loads(remote.stdout)
        assert all(TIME.fullmatch(mine[key]) for key in REALTIME_TIMES)
        for view in (mine, theirs):
            for key in REALTIME_TIMES:
                view.pop(key)
        assert theirs == mine
        assert mine["artifacts_received"] == 12
    else:
        assert TIME.sub("T", remote.stdout) == TIME.sub("T", direct.stdout)
        assert "12" in remote.stdout


def test_the_numbers_are_the_seeded_ones(served: Served) -> None:
    history = orjson.loads(served.remote["history-json"].stdout)
    assert [row["artifacts_received"] for row in history["rows"]] == [10, 11, 12]
    assert history["summary"]["artifacts_received"] == 33
    assert history["rows"][0]["period_start"].endswith(":00:00Z")
    assert history["rows"][0]["organization_id"] is None
    orgs = orjson.loads(served.remote["orgs-json"].stdout)["organizations"]
    assert [(row["organization_id"], row["name"]) for row in orgs] == [
        ("org-b", "Unknown"),
        ("org-a", "Acme Transcripts"),
    ]


def test_environment_variables_select_the_api(served: Served) -> None:
    env = served.env | {"VOICEMON_API_URL": served.url, "VOICEMON_TOKEN": token(org="org-a"),
                        "VOICEMON_REDIS_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    run = cli(("metrics", "realtime", "--org", "org-a", "--json"), env)
    assert run.code == 0, run.stderr
    assert orjson.loads(run.stdout)["organization_id"] == "org-a"


def _refusals(url: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    span = ("--start", "2026-11-28T00:00:00Z", "--end", "2026-11-28T01:00:00Z")
    org_a = token(org="org-a")
    forged = mint("another-secret-that-is-long-enough-0000", "x", staff=True,
                  organization_id=None, ttl_s=60)  # fmt: skip
    return {
        "garbage-token": (("metrics", "realtime", "--api", url, "--token", "garbage"),
                          ("401", "refused the token", "--token")),
        "forged-token": (("metrics", "history", *span, "--api", url, "--token", forged),
                         ("refused the token", url)),
        "org-reads-platform": (("metrics", "realtime", "--api", url, "--token", org_a),
                               ("does not let this token read", "--org")),
        "org-reads-another": (("metrics", "stages", *span, "--org", "org-b", "--api", url,
                               "--token", org_a), ("does not let this token read",)),
        "org-reads-orgs": (("metrics", "orgs", *span, "--api", url, "--token", org_a),
                           ("does not let this token read", "staff")),
        "bad-org-id": (("metrics", "realtime", "--org", "not an id!", "--api", url, "--token",
                        org_a), ("refused the request", "organization_id")),
        "bad-start": (("metrics", "history", "--start", "noon", "--end", "0", "--api", url,
                       "--token", org_a), ("--start", "RFC 3339")),
        "not-an-api": (("metrics", "realtime", "--api", url + "/nowhere", "--token", org_a),
                       ("has no such route",)),
    }  # fmt: skip


def test_an_api_refusal_is_one_sentence(served: Served) -> None:
    cases = _refusals(served.url)
    with ThreadPoolExecutor(4) as pool:
        runs = {name: pool.submit(cli, args, served.env) for name, (args, _) in cases.items()}
        for name, (_, names) in cases.items():
            run = runs[name].result()
            lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
            assert run.code == 1, (name, run)
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, run)
            assert "Traceback" not in run.stderr
            for part in names:
                assert part in lines[0], (name, part, lines[0])
