"""Adversarial tests of pure ingest code (the break-it review of issue 16)."""

from __future__ import annotations

import time

import orjson

from consumers.batch import TOO_LATE_NOW, Message, letter_of
from consumers.decode import element_spans
from consumers.rows import Position, RawRow
from voicemon.event import EventType, PipelineEvent

# One batch just under the 1 MiB message limit: 1000 valid events, each carrying an extra
# (ignored, CONTRACT §3 allows unknown fields) array of small numbers, so that the batch holds
# ~450k JSON tokens.
_PAD = [0] * 450
_BATCH = orjson.dumps(
    [
        {"event_id": f"e{i}", "event_type": "artifact_received", "occurred_at": 0,
         "artifact_id": "a", "x": _PAD}
        for i in range(1000)
    ]
)  # fmt: skip


def test_the_letters_of_a_whole_batch_cost_one_scan_of_it() -> None:
    """CONTRACT §3.3 ("no single message can stop the stream") and the 10 s stop deadline:
    every element of a batch found too late by the worker's clock gets its letter from
    ``letter_of``, which re-tokenizes the whole message per element (``element_spans``), on
    the event loop: a 1 MiB batch of 1000 such elements costs ~1000 scans (minutes of CPU,
    the loop blocked, SIGTERM unanswered). Its letters must cost about one scan."""
    assert len(_BATCH) < 1024 * 1024
    message = Message(0, 7, b"k", _BATCH, 0, True)
    started = time.perf_counter()
    element_spans(_BATCH)
    one_scan = time.perf_counter() - started
    rows = 50  # a 20th of the batch keeps the test short; the cost is per letter
    started = time.perf_counter()
    for index in range(rows):
        event = PipelineEvent(f"e{index}", EventType.ARTIFACT_RECEIVED, 0, "a")
        letter = letter_of(RawRow(event, Position(0, 7, index)), message, TOO_LATE_NOW)
        assert orjson.loads(letter.rejected.payload or b"")["event_id"] == f"e{index}"
    spent = time.perf_counter() - started
    # 1000 letters, extrapolated, must stay within a few scans (here: within 5 s at most).
    assert spent * 1000 / rows < max(10 * one_scan, 5.0), (spent, one_scan)
