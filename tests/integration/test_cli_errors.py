"""Every ``voicemon`` command under each failure it can meet, as a real subprocess
(``python -m runtime ...``) against the real broker, Redis and chDB: it exits non-zero with
one line — ``error:`` and one sentence naming what failed — and no traceback.

The cases run in parallel once per module (each with its own chDB path, since a process
owns a store); each test checks one case's recorded result.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError

from runtime.cli.preflight import KafkaUnreachable, require_kafka, require_redis
from tests.ports import free_port
from voicemon.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Secrets as they arrive from files and Kubernetes Secrets: a newline inside or at the end,
# non-ASCII. No fragment of any of them may show in any output.
PASSWORD = "hünter2\nnot-to-be-shown"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.bm90LWEtcmVhbC10b2tlbg.c2lnbmF0dXJl\n"
NON_ASCII_TOKEN = "eyJhbGciOiJIUzI1NiJ9.tökén-wïth-ümläuts.c2ln\n"
SECRET_FRAGMENTS = ("hünter2", "not-to-be-shown", "h%C3%BCnter2", "ünïcödé-that-is-long",
                    "bm90LWEtcmVhbC10b2tlbg", "tökén-wïth-ümläuts")  # fmt: skip
JWT_SECRET = "a-test-jwt-secret-ünïcödé-that-is-long-enough-0123456789\n"
CLOSED = free_port()  # nothing listens here
TIMEOUT_S = 60.0
PARALLEL = 4

RANGE = ("--start", "2026-11-28T00:00:00Z", "--end", "2026-11-28T03:00:00Z")
METRICS = {
    "realtime": ("metrics", "realtime"),
    "history": ("metrics", "history", *RANGE),
    "stages": ("metrics", "stages", *RANGE),
    "orgs": ("metrics", "orgs", *RANGE),
}
REPLAY = ("replay", "--from", "2026-11-28T00:00:00Z", "--to", "2026-11-28T01:00:00Z")
EVERY_COMMAND = {
    "worker": ("worker",),
    "migrate": ("migrate",),
    "migrate-print": ("migrate", "--print"),
    "sql": ("sql", "SELECT 1"),
    "raw-count": ("raw-count",),
    "retention": ("retention", "run"),
    "replay": REPLAY,
    "close-windows": ("close-windows",),
    "api": ("api", "--port", str(CLOSED)),
    "token": ("token", "create", "--staff"),
    "orgs-import": ("orgs", "import", "{csv}"),
    "dlq-count": ("dlq-count",),
    "topics": ("topics", "ensure"),
    "stack-up": ("stack", "up", "--home", "{home}"),
    "stack-down": ("stack", "down", "--home", "{home}"),
    "stack-status": ("stack", "status", "--home", "{home}"),
    "produce": ("produce", "--duration", "1"),
    "demo": ("demo", "--seconds", "1", "--home", "{home}"),
    **{f"metrics-{name}": args for name, args in METRICS.items()},
}

KAFKA_DOWN = {"VOICEMON_KAFKA_BOOTSTRAP": f"127.0.0.1:{CLOSED}"}
REDIS_DOWN = {"VOICEMON_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{CLOSED}/0"}
CLICKHOUSE_DOWN = {
    "VOICEMON_CLICKHOUSE_DSN": f"http://voicemon:{PASSWORD}@127.0.0.1:{CLOSED}/voicemon"
}
WRONG_DSN = {"VOICEMON_CLICKHOUSE_DSN": f"clickhouse+native://voicemon:{PASSWORD}@db:9000/x"}
BAD_SETTING = {"VOICEMON_TOPIC_PARTITIONS": "abc"}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # what the sentence must name
    usage: bool = False  # a usage mistake: exit 2, as click does
    within_s: float = TIMEOUT_S


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for name, args in EVERY_COMMAND.items():
        cases[f"bad-setting/{name}"] = Case(args, BAD_SETTING, ("VOICEMON_TOPIC_PARTITIONS",))
    kafka = ("Kafka", f"127.0.0.1:{CLOSED}", "VOICEMON_KAFKA_BOOTSTRAP")
    for name in ("worker", "dlq-count", "topics", "produce", "replay", "close-windows",
                 "orgs-import"):  # fmt: skip
        cases[f"kafka-down/{name}"] = Case(EVERY_COMMAND[name], KAFKA_DOWN, kafka, within_s=30)
    redis = ("Redis", f"127.0.0.1:{CLOSED}", "VOICEMON_REDIS_URL")
    for name in ("metrics-realtime", "replay", "close-windows"):
        cases[f"redis-down/{name}"] = Case(EVERY_COMMAND[name], REDIS_DOWN, redis, within_s=30)
    clickhouse = ("ClickHouse", f"127.0.0.1:{CLOSED}", "VOICEMON_CLICKHOUSE_DSN")
    for name in ("migrate", "sql", "raw-count", "retention", "replay", "close-windows", "api",
                 "orgs-import", "metrics-history", "metrics-stages", "metrics-orgs"):  # fmt: skip
        cases[f"clickhouse-down/{name}"] = Case(EVERY_COMMAND[name], CLICKHOUSE_DOWN, clickhouse)
    for name in ("migrate", "raw-count", "api", "metrics-history"):
        cases[f"wrong-dsn/{name}"] = Case(EVERY_COMMAND[name], WRONG_DSN, ("CLICKHOUSE_DSN",))
    migrate = ("has no voicemon schema", "voicemon migrate")
    for name in ("raw-count", "retention", "metrics-history", "metrics-stages", "metrics-orgs"):
        cases[f"not-migrated/{name}"] = Case(EVERY_COMMAND[name], {}, migrate)
    cases["not-migrated/sql"] = Case(("sql", "SELECT count() FROM voicemon.snapshots"), {}, migrate)
    locked = ("in use by another process", "{locked}")
    for name in ("migrate", "raw-count", "metrics-history"):
        cases[f"store-in-use/{name}"] = Case(
            EVERY_COMMAND[name], {"VOICEMON_CLICKHOUSE_DSN": "chdb://{locked}"}, locked
        )
    api = ("API", f"127.0.0.1:{CLOSED}", "--api")
    for name, args in METRICS.items():
        remote = (*args, "--api", f"http://127.0.0.1:{CLOSED}", "--token", TOKEN)
        cases[f"api-down/{name}"] = Case(remote, {}, api, within_s=30)
    cases["api-token-from-env/realtime"] = Case(
        (*METRICS["realtime"], "--api", f"http://127.0.0.1:{CLOSED}"), {"VOICEMON_TOKEN": TOKEN},
        api, within_s=30,
    )  # fmt: skip
    for where, args, env in (
        ("option", ("--token", NON_ASCII_TOKEN), {}),
        ("env", (), {"VOICEMON_TOKEN": NON_ASCII_TOKEN}),
    ):
        cases[f"api-token-non-ascii-{where}/realtime"] = Case(
            (*METRICS["realtime"], "--api", f"http://127.0.0.1:{CLOSED}", *args), env,
            ("--token", "VOICEMON_TOKEN", "no bearer token has"),
        )  # fmt: skip
    cases["api-no-token/realtime"] = Case(
        (*METRICS["realtime"], "--api", "http://127.0.0.1:1"), {}, ("--token", "VOICEMON_TOKEN")
    )
    no_secret = {"VOICEMON_JWT_SECRET": ""}
    cases.update({
        "args/token-ttl-empty": Case(("token", "create", "--staff", "--ttl", ""), {}, ("--ttl",)),
        "args/token-ttl-negative": Case(
            ("token", "create", "--staff", "--ttl", "-5m"), {}, ("--ttl", "positive")
        ),
        "args/token-ttl-garbage": Case(("token", "create", "--org", "a", "--ttl", "1y"), {},
                                       ("--ttl",)),
        "args/token-staff-or-org": Case(("token", "create"), {}, ("--staff", "--org")),
        "args/token-no-secret": Case(("token", "create", "--staff"), no_secret,
                                     ("VOICEMON_JWT_SECRET",)),
        "args/api-no-secret": Case(("api",), no_secret, ("VOICEMON_JWT_SECRET",)),
        "args/history-no-start": Case(("metrics", "history", "--end", "0"), {},
                                      ("Missing", "--start"), usage=True),
        "args/stages-no-end": Case(("metrics", "stages", "--start", "0"), {},
                                   ("Missing", "--end"), usage=True),
        "args/history-bad-start": Case(("metrics", "history", "--start", "yesterday",
                                        "--end", "0"), {}, ("--start", "RFC 3339")),
        "args/history-bad-period": Case((*METRICS["history"], "--period", "weekly"), {},
                                        ("--period", "hourly"), usage=True),
        "args/history-too-long": Case(("metrics", "history", "--start", "0",
                                       "--end", "2026-11-28T00:00:00Z"), {}, ("range", "daily")),
        "args/orgs-limit": Case((*METRICS["orgs"], "--limit", "0"), {}, ("--limit",), usage=True),
        "args/replay-no-from": Case(("replay", "--to", "0"), {}, ("Missing", "--from"),
                                    usage=True),
        "args/replay-reversed": Case(("replay", "--from", "10", "--to", "0"), {},
                                     ("--from", "--to")),
        "args/close-windows-now": Case(("close-windows", "--now", "soon"), {}, ("now",)),
        "args/orgs-import-missing": Case(("orgs", "import", "/nonexistent/orgs.csv"), {},
                                         ("/nonexistent/orgs.csv",), usage=True),
        "args/orgs-import-bad-csv": Case(("orgs", "import", "{bad_csv}"), {},
                                         ("bad.csv:2", "organization_id,name")),
        "args/unknown-command": Case(("frobnicate",), {}, ("frobnicate",), usage=True),
        "args/unknown-option": Case(("raw-count", "--frob"), {}, ("--frob",), usage=True),
        "args/sql-syntax": Case(("sql", "SELEC 1"), {}, ("SYNTAX_ERROR", "query")),
    })  # fmt: skip
    return cases


CASES = _cases()


@dataclass(frozen=True)
class Outcome:
    code: int
    output: str
    seconds: float


def _fill(text: str, slots: Mapping[str, str]) -> str:
    for name, value in slots.items():
        text = text.replace("{" + name + "}", value)
    return text


def _run(case_id: str, case: Case, base: Mapping[str, str], workdir: Path, locked: str) -> Outcome:
    home = workdir / case_id.replace("/", "-")
    home.mkdir(parents=True)
    (home / "orgs.csv").write_text("organization_id,name\nacme,Acme\n")
    (home / "bad.csv").write_text("organization_id,name\n,\n")
    slots = {"home": str(home), "csv": str(home / "orgs.csv"), "bad_csv": str(home / "bad.csv"),
             "locked": locked}  # fmt: skip
    env = {**base, "VOICEMON_CLICKHOUSE_DSN": f"chdb://{home / 'store'}"}
    env |= {name: _fill(value, slots) for name, value in case.env.items()}
    env = {name: value for name, value in env.items() if value != ""}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "runtime", *(_fill(arg, slots) for arg in case.args)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as expired:
        return Outcome(-1, f"timed out; output so far: {expired.output!r}", TIMEOUT_S)
    return Outcome(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def locked_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A chDB store held open by another process, as a running worker holds it."""
    path = tmp_path_factory.mktemp("locked") / "store"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, clickhouse_connect\n"
         "client = clickhouse_connect.get_client(dsn='chdb://' + sys.argv[1])\n"
         "client.query('SELECT 1')\nprint('ready', flush=True)\ntime.sleep(600)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    yield str(path)
    holder.kill()
    holder.wait()


@pytest.fixture(scope="module")
def outcomes(
    stack: Settings, locked_store: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("VOICEMON_")}
    base |= {
        "VOICEMON_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "VOICEMON_REDIS_URL": stack.redis_url.get_secret_value(),
        "VOICEMON_JWT_SECRET": JWT_SECRET,
        "COLUMNS": "80",
    }
    workdir = tmp_path_factory.mktemp("cli-errors")
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {
            case_id: pool.submit(_run, case_id, case, base, workdir, locked_store)
            for case_id, case in CASES.items()
        }
        return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize("case_id", list(CASES))
def test_a_failure_is_one_sentence(
    case_id: str, outcomes: dict[str, Outcome], locked_store: str
) -> None:
    case, outcome = CASES[case_id], outcomes[case_id]
    lines = [line for line in outcome.output.splitlines() if line.strip()]
    assert outcome.code == (2 if case.usage else 1), outcome.output
    assert len(lines) == 1, outcome.output
    assert "Traceback" not in outcome.output
    assert lines[0].startswith("error: "), outcome.output
    for name in case.names:
        assert _fill(name, {"locked": locked_store}) in lines[0], (name, lines[0])
    for fragment in SECRET_FRAGMENTS:
        assert fragment not in outcome.output, (fragment, outcome.output)
    assert outcome.seconds < case.within_s, (outcome.seconds, lines[0])


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {name: value for name, value in os.environ.items() if not name.startswith("VOICEMON_")}
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args], cwd=ROOT, env=base | env,
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--debug", "dlq-count"), {}), (("dlq-count",), {"VOICEMON_DEBUG": "1"})],
)
def test_debug_shows_the_traceback_then_the_sentence(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    done = _cli(*args, VOICEMON_KAFKA_BOOTSTRAP=f"127.0.0.1:{CLOSED}", **env)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "KafkaUnreachable" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach Kafka at 127.0.0.1:"), done.stderr


def test_success_still_exits_zero_and_help_needs_no_settings() -> None:
    assert _cli("--help", VOICEMON_TOPIC_PARTITIONS="abc").returncode == 0
    done = _cli("migrate", "--print")
    assert done.returncode == 0 and "CREATE DATABASE" in done.stdout, done.stderr


def test_an_unreachable_kafka_is_known_in_about_a_second(stack: Settings) -> None:
    require_kafka(stack.kafka_bootstrap)  # the real broker answers
    started = time.monotonic()
    with pytest.raises(KafkaUnreachable) as refused:
        require_kafka(f"127.0.0.1:{CLOSED}")
    assert time.monotonic() - started < 3
    assert "Connection refused" in refused.value.reason


def test_a_silent_kafka_is_given_up_on_at_the_deadline() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(KafkaUnreachable):
            require_kafka(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=1.5)
        assert 1.5 <= time.monotonic() - started < 4


def test_redis_preflight(stack: Settings) -> None:
    require_redis(stack)
    started = time.monotonic()
    closed = stack.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{CLOSED}/0")})
    with pytest.raises(RedisConnectionError, match="Connection refused"):
        require_redis(closed)
    assert time.monotonic() - started < 3
