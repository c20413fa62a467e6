"""What ``DeadLetters.published_after`` reads of a DLQ partition, over a list standing in for
it: each record once, whichever way the requested start moves, and a fresh start past
``KEPT_SOURCES`` (the Kafka reads themselves: tests/integration/test_dlq_refusals.py)."""

from __future__ import annotations

import threading

import pytest

from consumers import dead_letters
from consumers.dead_letters import DeadLetters
from consumers.letters import Source


class ListedDlq(DeadLetters):
    """One DLQ partition as a list of (timestamp ms, source); records every read."""

    def __init__(self, records: list[tuple[int, Source]]) -> None:
        self._reading = threading.Lock()
        self._kept = {}
        self.records = records
        self.reads: list[tuple[int, int]] = []

    def end_offset(self, partition: int) -> int:
        return len(self.records)

    def offset_at(self, partition: int, ms: int) -> int:
        return next((n for n, (at, _) in enumerate(self.records) if at >= ms), len(self.records))

    def _sources_between(self, partition: int, offset: int, end: int) -> set[Source]:
        self.reads.append((offset, end))
        return {source for _, source in self.records[offset:end]}


def source(n: int) -> Source:
    return (0, n, None)


def test_each_record_is_read_once_whichever_way_the_start_moves() -> None:
    dlq = ListedDlq([(100 * n, source(n)) for n in range(10)])
    assert dlq.published_after(0, 500) == {source(n) for n in range(5, 10)}
    dlq.records.append((1000, source(10)))
    assert dlq.published_after(0, 700) == {source(n) for n in range(5, 11)}  # kept, and more
    assert dlq.published_after(0, 200) == {source(n) for n in range(2, 11)}
    assert dlq.published_after(0, 900) == {source(n) for n in range(2, 11)}
    assert dlq.reads == [(5, 10), (10, 11), (2, 5)]


def test_past_the_kept_limit_it_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_letters, "KEPT_SOURCES", 3)
    dlq = ListedDlq([(100 * n, source(n)) for n in range(10)])
    assert dlq.published_after(0, 600) == {source(n) for n in range(6, 10)}  # 4 kept: over
    assert dlq.published_after(0, 800) == {source(8), source(9)}
    assert dlq.reads == [(6, 10), (8, 10)]
