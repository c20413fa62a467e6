"""The DLQ tools, the demo and the real-time watch, run as ``python -m runtime ...`` against
the real broker, Redis and ClickHouse engine.

A rejected event, fixed by ``voicemon dlq replay`` with a JSON patch, counts exactly once —
replayed twice, still once (event_id dedup); ``dlq tail`` and ``dlq inspect`` show it with
its reason."""

from __future__ import annotations

import os
import pty
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.harness import Pipeline
from voicemon.devtools.localstack import LocalStack
from voicemon.settings import Settings
from voicemon.store import Client

ADD_ARTIFACT = [{"op": "add", "path": "/artifact_id", "value": "art-fixed"}]


def now_ms() -> int:
    return int(time.time() * 1000)


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_type": "artifact_received", "occurred_at": now_ms(),
            "artifact_id": f"art-{event_id}", **fields}  # fmt: skip


def without_artifact(event_id: str) -> dict[str, Any]:
    body = event(event_id)
    del body["artifact_id"]
    return body


def cli(pipeline: Pipeline, *args: str, expect: int = 0) -> str:
    """Run one ``voicemon`` command with the test's settings; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        env={**os.environ, **pipeline.env},
        capture_output=True,
        timeout=120,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == expect, f"{args}: exit {done.returncode}\n{out}\n{err}"
    assert "Traceback" not in out + err, err
    return out


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


class Follower:
    """``voicemon dlq tail --follow --json`` running beside the test, its lines queued."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime", "dlq", "tail", "--follow", "--json",
             "--from-beginning"],
            env={**os.environ, **pipeline.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(orjson.loads(line))

    def next(self, timeout_s: float = 60) -> dict[str, Any]:
        return self.lines.get(timeout=timeout_s)

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()  # reaped even when it ignored the interrupt
            _, err = self.process.communicate()
        return self.process.returncode, err.decode()


def test_a_rejected_event_fixed_by_replay_counts_exactly_once(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    batch = [event("in-batch-ok"), event("in-batch-bad", event_type="artifact_teleported")]
    pipeline.publish([event("good"), without_artifact("fix-me"), batch])
    pipeline.start_worker()
    pipeline.wait_consumed()

    # tail: both rejections, with reason, detail, source and batch index.
    letters = {line["reason"]: line for line in json_lines(cli(pipeline, "dlq", "tail", "--json"))}
    assert set(letters) == {"missing_field", "unknown_event_type"}
    missing = letters["missing_field"]
    assert missing["detail"] == "artifact_id: required field is missing"
    assert missing["event_id"] == "fix-me" and missing["batch_index"] is None
    assert isinstance(missing["source_partition"], int) and missing["source_offset"] >= 0
    assert missing["time"].endswith("Z") and missing["key"]
    assert letters["unknown_event_type"]["batch_index"] == 1
    assert letters["unknown_event_type"]["event_id"] == "in-batch-bad"
    human = cli(pipeline, "dlq", "tail", "--reason", "missing_field")
    assert human.count("\n") == 1 and "missing_field" in human and "event_id=fix-me" in human
    assert "artifact_id: required field is missing" in human

    # follow: a new rejection appears while the command runs; Ctrl-C ends it cleanly.
    follower = Follower(pipeline)
    try:
        assert {follower.next()["event_id"], follower.next()["event_id"]} == {
            "fix-me", "in-batch-bad"
        }  # fmt: skip
        pipeline.publish([event("bad-cost", ai_cost_usd=-1.0)])
        arrived = follower.next()
        assert (arrived["reason"], arrived["event_id"]) == ("invalid_field", "bad-cost")
    finally:
        code, err = follower.interrupt()
    assert code == 0 and "Traceback" not in err, err

    # inspect: counts by reason, as JSON and as a table.
    summary = orjson.loads(cli(pipeline, "dlq", "inspect", "--json", "--since", "1h"))
    assert summary["messages"] == 3
    assert {r["reason"]: r["messages"] for r in summary["reasons"]} == {
        "missing_field": 1, "unknown_event_type": 1, "invalid_field": 1
    }  # fmt: skip
    table = cli(pipeline, "dlq", "inspect")
    assert "missing_field" in table and "3 dead letter(s)" in table

    # replay: a dry run judges with the worker's own rules and sends nothing.
    patch = tmp_path / "fix.json"
    patch.write_bytes(orjson.dumps(ADD_ARTIFACT))
    ends = pipeline.end_offsets(pipeline.settings.events_topic)
    as_is = json_lines(cli(pipeline, "dlq", "replay", "--reason", "missing_field", "--dry-run",
                           "--json"))  # fmt: skip
    assert [(s["passes"], s["action"]) for s in as_is] == [(False, "skipped")]
    assert as_is[0]["problems"] == ["missing_field: artifact_id: required field is missing"]
    fixed = json_lines(cli(pipeline, "dlq", "replay", "--reason", "missing_field", "--patch",
                           str(patch), "--dry-run", "--json"))  # fmt: skip
    assert [(s["passes"], s["action"], s["event_id"]) for s in fixed] == [
        (True, "would send", "fix-me")
    ]  # fmt: skip
    assert pipeline.end_offsets(pipeline.settings.events_topic) == ends

    # replay for real, twice: the worker counts the fixed event once.
    for _ in range(2):
        out = cli(pipeline, "dlq", "replay", "--reason", "missing_field", "--patch", str(patch))
        assert "sent 1 to " + pipeline.settings.events_topic in out
    assert sum(pipeline.end_offsets(pipeline.settings.events_topic).values()) == (
        sum(ends.values()) + 2
    )
    pipeline.wait_consumed()
    received = pipeline.realtime()["artifacts_received"]
    assert received == 3  # good, in-batch-ok and fix-me, each once
    assert len(pipeline.dlq()) == 3  # the replayed copies were accepted, none rejected
    pipeline.stop_workers()
    rows = pipeline.sql(
        "SELECT event_id, artifact_id, count() AS n FROM voicemon.pipeline_events "
        "GROUP BY event_id, artifact_id ORDER BY event_id"
    )
    assert rows == [
        {"event_id": "fix-me", "artifact_id": "art-fixed", "n": 1},
        {"event_id": "good", "artifact_id": "art-good", "n": 1},
        {"event_id": "in-batch-ok", "artifact_id": "art-in-batch-ok", "n": 1},
    ]


def test_a_python_fixup_replays_a_batch_element_once(
    pipeline: Pipeline, clean_store: Client, tmp_path: Path
) -> None:
    stage = pipeline.settings.stages[0]
    batch = [event("kept", event_type="stage_started", stage=stage),
             event("typo", event_type="stage_started", stage=stage.upper())]  # fmt: skip
    pipeline.publish([batch])
    now = now_ms()
    pipeline.ingest(clean_store, pipeline.consume(), now)
    assert pipeline.realtime(now_ms=now)["stages"][stage]["started"] == 1
    fixes = tmp_path / "fixes.py"
    fixes.write_text(
        "def lower_stage(event):\n    return {**event, 'stage': event['stage'].lower()}\n"
    )

    dry = json_lines(cli(pipeline, "dlq", "replay", "--all", "--fixup", f"{fixes}:lower_stage",
                         "--dry-run", "--json"))  # fmt: skip
    assert [(s["event_id"], s["reason"], s["passes"]) for s in dry] == [
        ("typo", "unknown_stage", True)
    ]  # fmt: skip
    for _ in range(2):
        cli(pipeline, "dlq", "replay", "--offset", "0:0-5", "--offset", "1:0-5", "--offset",
            "2:0-5", "--offset", "3:0-5", "--fixup", f"{fixes}:lower_stage")  # fmt: skip
    outcome = pipeline.ingest(clean_store, pipeline.consume(), now_ms())  # all messages again
    assert (outcome.counted, outcome.duplicates) == (1, 1)  # the first copy, then the second
    assert len(pipeline.dlq()) == 1  # the original batch decided alike: not published again
    assert pipeline.realtime(now_ms=now_ms())["stages"][stage]["started"] == 2
    stored = clean_store.query("SELECT event_id, stage FROM voicemon.pipeline_events ORDER BY 1")
    assert stored.result_rows == [("kept", stage), ("typo", stage)]


def test_the_realtime_watch_refreshes_in_place_and_ctrl_c_exits_cleanly(
    pipeline: Pipeline,
) -> None:
    controller, terminal = pty.openpty()
    env = {**os.environ, **pipeline.env, "TERM": "xterm-256color", "COLUMNS": "80"}
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", "metrics", "realtime", "--watch", "0.3"],
        env=env, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while seen.count(b"last hour") < 3 and time.monotonic() < deadline:
            if select.select([controller], [], [], 1)[0]:
                seen += os.read(controller, 65536)
        assert seen.count(b"last hour") >= 3, seen.decode(errors="replace")
        assert b"\x1b[2K" in seen and b"\x1b[1A" in seen  # redrawn in place: up, erase
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # reaped even when it ignored the interrupt
            code = process.wait()
        while select.select([controller], [], [], 0.5)[0]:
            try:
                seen += os.read(controller, 65536)
            except OSError:
                break
        os.close(controller)
    assert code == 0 and b"Traceback" not in seen, seen.decode(errors="replace")


@pytest.mark.timeout(400)
def test_the_demo_reconciles(pipeline: Pipeline, stack: Settings, tmp_path: Path) -> None:
    out = cli(pipeline, "demo", "--seconds", "6", "--rate", "400", "--home", str(tmp_path),
              "--catch-up", "180")  # fmt: skip
    verdict = next(line for line in out.splitlines() if line.startswith("reconciled:"))
    numbers = [int(word.replace(",", "")) for word in verdict.split() if word[0].isdigit()]
    published, counted, duplicates, rejected = numbers
    assert published == counted + duplicates + rejected and published > 2000
    assert "published = counted + duplicates + rejected" in out  # the table's title
    assert LocalStack(stack, tmp_path).status() == {"kafka": True, "redis": True}  # left running
