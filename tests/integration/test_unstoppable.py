"""No record published to the input topic can stop consumption (CONTRACT §3.3): generated
hostile-but-well-formed records go through the running worker, and the good event published
after them is still counted."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.harness import Pipeline

HUGE = st.integers(min_value=-(2**80), max_value=2**80)
ODD_STRINGS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
ODD_NUMBERS = st.one_of(HUGE, st.floats(allow_nan=False, allow_infinity=False), st.booleans())
ODD_VALUES = st.one_of(
    st.none(),
    ODD_NUMBERS,
    ODD_STRINGS,
    st.lists(ODD_NUMBERS, max_size=3),
    st.dictionaries(ODD_STRINGS, ODD_NUMBERS, max_size=2),
)
FIELDS = ("event_id", "event_type", "occurred_at", "artifact_id", "organization_id", "stage",
          "duration_ms", "ai_cost_usd", "error_code", "schema_version")  # fmt: skip
TYPES = ("artifact_received", "artifact_completed", "artifact_failed", "stage_started",
         "stage_completed", "stage_failed")  # fmt: skip


def near_now(now: int) -> st.SearchStrategy[int]:
    return st.integers(now - 49 * 3_600_000, now + 600_000)


@st.composite
def hostile_event(draw: st.DrawFn) -> dict[str, Any]:
    """An event close to valid with some fields pushed to odd or extreme values."""
    now = int(time.time() * 1000)
    body: dict[str, Any] = {
        "event_id": draw(st.one_of(st.uuids().map(str), ODD_STRINGS)),
        "event_type": draw(st.sampled_from(TYPES)),
        "occurred_at": draw(st.one_of(near_now(now), HUGE, ODD_STRINGS)),
        "artifact_id": draw(st.one_of(st.just("a-1"), ODD_STRINGS)),
        "stage": draw(st.sampled_from([None, "transcription", "mixing"])),
    }
    for name in draw(st.sets(st.sampled_from(FIELDS), max_size=4)):
        body[name] = draw(ODD_VALUES)
    return body


def as_json(value: object) -> bytes:
    """JSON as any producer may write it, integers beyond 64 bits included."""
    return json.dumps(value).encode()


RECORD = st.one_of(
    hostile_event().map(as_json),
    st.lists(hostile_event(), min_size=1, max_size=20).map(as_json),
    st.sampled_from([b"", b"null", b"[]", b"[[]]", b"{}", b"[null]", b"\x00", b"1e999"]),
    st.binary(max_size=64),
)


SLOW = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=4, deadline=None, database=None, suppress_health_check=SLOW)
@given(records=st.lists(RECORD, min_size=20, max_size=80))
def test_no_record_stops_consumption(pipeline: Pipeline, records: list[bytes]) -> None:
    if not pipeline.workers:
        pipeline.start_worker(VOICEMON_CLOSER_ENABLED="false")
    for record in records:
        pipeline.publisher.send(pipeline.settings.events_topic, record, b"hostile")
    pipeline.publisher.send(pipeline.settings.events_topic, None, b"hostile")  # a null record
    marker = f"good-{time.monotonic_ns()}"
    good = {"event_id": marker, "event_type": "artifact_received",
            "occurred_at": int(time.time() * 1000), "artifact_id": marker,
            "organization_id": "org-good"}  # fmt: skip
    before = pipeline.realtime("org-good")["artifacts_received"]
    pipeline.publish([good], key=b"hostile")  # same key: after the hostile ones, in order
    deadline = time.monotonic() + 60
    while pipeline.realtime("org-good")["artifacts_received"] != before + 1:
        assert time.monotonic() < deadline, "the good event after hostile records was not counted"
        assert all(worker.poll() is None for worker in pipeline.workers), "the worker died"
        time.sleep(0.2)
