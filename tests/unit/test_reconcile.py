"""The demo's books (voicemon/devtools/reconcile.py) and the duplicates the generator knows."""

from __future__ import annotations

import itertools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

from voicemon.devtools.loadgen import LoadMix, Published
from voicemon.devtools.reconcile import Reconciliation, WorkerCounts, worker_counts
from voicemon.settings import DEFAULT_STAGES


def exposition() -> str:
    """A worker's /metrics as prometheus-client writes it, with the counters of §8."""
    registry = CollectorRegistry()
    events = Counter("voicemon_events", "", ["event_type", "stage"], registry=registry)
    events.labels("artifact_received", "").inc(100)
    events.labels("stage_completed", "transcription").inc(50)
    rejected = Counter("voicemon_events_rejected", "", ["reason"], registry=registry)
    rejected.labels("invalid_json").inc(2)
    rejected.labels("missing_field").inc(1)
    Counter("voicemon_events_duplicate", "", registry=registry).inc(7)
    Counter("voicemon_events_late", "", registry=registry).inc(1000)  # not in the books
    return generate_latest(registry).decode()


def test_worker_counts_sum_the_counters_over_their_labels() -> None:
    seen = worker_counts(exposition())
    assert seen == WorkerCounts(counted=150, duplicates=7, rejected=3)
    assert seen.consumed == 160
    assert worker_counts("") == WorkerCounts()


def books(**overrides: Any) -> Reconciliation:
    values: dict[str, Any] = {"published": Published(1010, 5, 10), "counted": 1000,
                              "rejected": 5, "worker": WorkerCounts(1000, 10, 5),
                              "caught_up": True, "waited_s": 120.0}  # fmt: skip
    return Reconciliation(**(values | overrides))


def test_books_that_balance_say_so() -> None:
    balanced = books()
    assert balanced.holds and balanced.difference == 0 and balanced.reasons() == []
    assert balanced.verdict() == (
        "reconciled: published 1,015 = counted 1,000 + duplicates 10 + rejected 5"
    )
    assert balanced.rows()[2] == ("published", 1015, "events + malformed")
    assert balanced.rows()[-1][:2] == ("difference", 0)


def test_books_that_do_not_balance_say_by_how_much_and_why() -> None:
    lagging = books(counted=900, caught_up=False, worker=WorkerCounts(900, 10, 5))
    assert lagging.difference == 100 and not lagging.holds
    assert lagging.reasons() == ["the worker had not judged every message after 120 s"]
    assert lagging.verdict().startswith("not reconciled, off by 100: published 1,015 vs counted")

    odd = books(counted=1002, rejected=4, worker=WorkerCounts(1000, 8, 4))
    assert odd.difference == -1
    assert odd.reasons() == [
        "the worker saw 8 duplicates, the generator injected 10",
        "the DLQ gained 4 messages for 5 malformed ones published",
        "1,002 raw rows, but the worker counted 1,000 events",
    ]
    unexplained = books(counted=999, worker=None)
    assert unexplained.reasons()[0].startswith("unknown:")


def test_the_generator_counts_the_duplicates_it_injects() -> None:
    mix = LoadMix(7, 5, DEFAULT_STAGES, duplicate_share=0.05, malformed_share=0.01)
    clock = (1_795_900_000_000 + i for i in itertools.count())
    seen: set[str] = set()
    repeats = 0
    for item in itertools.islice(mix.stream(clock), 20_000):
        if isinstance(item, dict):
            repeats += item["event_id"] in seen
            seen.add(item["event_id"])
    assert repeats == mix.duplicates > 500
