"""VOICEMON_LOG_FORMAT=json on the real thing: a worker (Faust, its embedded API, librdkafka's
clients) and a standalone ``voicemon api`` write one JSON object per line, every line, with
the fields operators filter on, and never a secret."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.integration.harness import Pipeline
from tests.integration.test_ingest import event
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
# A key with a non-ASCII character; a Redis password rides in the URL but is never checked
# by this Redis (no requirepass): what matters is that no line shows either.
JWT_SECRET = "a-json-log-test-key-ünïcödé-0123456789abcdef"
FIELDS = {"time", "level", "logger", "message"}


def json_lines(raw: bytes) -> list[dict[str, Any]]:
    """Every non-empty line of ``raw`` as a JSON object (a line that is not one fails)."""
    entries = []
    for number, line in enumerate(raw.decode().splitlines(), 1):
        if line.strip():
            entry = orjson.loads(line)
            assert isinstance(entry, dict) and set(entry) >= FIELDS, (number, line)
            entries.append(entry)
    return entries


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the process ended"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer")


def test_a_worker_logs_one_json_object_per_line(pipeline: Pipeline) -> None:
    port = free_port()
    worker = pipeline.start_worker(
        VOICEMON_LOG_FORMAT="json",
        VOICEMON_LOG_LEVEL="info",
        VOICEMON_API_ENABLED="true",
        VOICEMON_API_PORT=str(port),
        VOICEMON_API_ACCESS_LOG="true",
        VOICEMON_JWT_SECRET=JWT_SECRET,
    )
    pipeline.publish([event("log-1"), b"{not json"])
    directory = pipeline.settings.organizations_topic  # a record the directory agent ignores
    pipeline.publisher.send(directory, b"[not a directory record]", b"acme")
    pipeline.publisher.flush()
    pipeline.wait_consumed()
    wait_http(f"http://127.0.0.1:{port}/healthz", worker)
    forged = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLW5vdC12YWxpZA"
    refused = httpx.get(f"http://127.0.0.1:{port}/v1/metrics/realtime",
                        headers={"Authorization": forged})  # fmt: skip
    assert refused.status_code == 401
    log = pipeline.workdir / "worker-1.log"
    deadline = time.monotonic() + 60
    while b'"logger":"voicemon.directory"' not in log.read_bytes():
        assert time.monotonic() < deadline, "the directory agent logged nothing"
        time.sleep(0.5)
    pipeline.stop_workers()
    raw = log.read_bytes()
    entries = json_lines(raw)
    loggers = {entry["logger"] for entry in entries}
    assert any(name.startswith(("faust", "mode")) for name in loggers), loggers
    assert {entry["level"] for entry in entries} <= {"debug", "info", "warning", "error",
                                                      "critical"}  # fmt: skip
    access = [entry for entry in entries if entry["logger"] == "uvicorn.access"]
    assert {(e.get("method"), e.get("path"), e.get("status")) for e in access} >= {
        ("GET", "/healthz", 200), ("GET", "/v1/metrics/realtime", 401)}  # fmt: skip
    assert JWT_SECRET.encode() not in raw and forged.split()[1].encode() not in raw
    ignored = [e for e in entries if e["logger"] == "voicemon.directory"]  # names where it read
    assert ignored, [e["message"] for e in entries if e["level"] != "info"]
    assert ignored[0]["topic"] == directory
    assert (ignored[0]["partition"], ignored[0]["offset"]) == (0, 0)


def test_the_api_logs_one_json_object_per_line(tmp_path: Path, pipeline: Pipeline) -> None:
    port = free_port()
    env = {**pipeline.env, "VOICEMON_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'api-store'}",
           "VOICEMON_LOG_FORMAT": "json", "VOICEMON_API_ACCESS_LOG": "true",
           "VOICEMON_JWT_SECRET": JWT_SECRET, "PATH": "/usr/bin:/bin"}  # fmt: skip
    out, err = tmp_path / "api.out", tmp_path / "api.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        api = subprocess.Popen(
            [sys.executable, "-m", "runtime", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", api)
            assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 404
            assert httpx.get(f"http://127.0.0.1:{port}/v1/metrics/realtime").status_code == 401
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=30)
    entries = json_lines(out.read_bytes()) + json_lines(err.read_bytes())
    paths = {(e.get("path"), e.get("status")) for e in entries if e["logger"] == "uvicorn.access"}
    assert paths >= {("/healthz", 200), ("/docs", 404), ("/v1/metrics/realtime", 401)}
    assert any(e["logger"].startswith("uvicorn") and e["level"] == "info" for e in entries)
    assert JWT_SECRET.encode() not in out.read_bytes() + err.read_bytes()
