"""The pure parts of ingest: classify, written_windows (consumers/ingest.py) and chunks
(consumers/ingest_agent.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.batch import Message, classify, written_windows
from consumers.ingest import _spans
from consumers.ingest_agent import chunks
from consumers.rolling_counters import Span
from consumers.rows import Position, RawRow
from voicemon.event import EventType, PipelineEvent

T0 = 1_764_288_000_000  # 2025-11-28T00:00:00Z
HOUR = 3_600_000


def row(event_id: str, partition: int, offset: int, index: int = 0, at: int = T0) -> RawRow:
    event = PipelineEvent(
        event_id=event_id,
        event_type=EventType.ARTIFACT_RECEIVED,
        occurred_at_ms=at,
        artifact_id="a-1",
    )
    return RawRow(event, Position(partition, offset, index))


# -- Position --------------------------------------------------------------------------------


def test_position_string() -> None:
    assert str(Position(3, 1042, 7)) == "3:1042:7"


# -- classify --------------------------------------------------------------------------------


def test_classify_empty() -> None:
    result = classify([], [])
    assert (result.new, result.replayed, result.duplicates) == ([], [], [])


def test_classify_unowned_events_are_new() -> None:
    rows = [row("e1", 0, 10), row("e2", 0, 11), row("e3", 1, 4, 2)]
    result = classify(rows, [None, None, None])
    assert result.new == rows
    assert result.replayed == []
    assert result.duplicates == []


def test_classify_first_occurrence_in_batch_only() -> None:
    rows = [row("e1", 0, 10), row("e1", 0, 11), row("e2", 0, 12), row("e1", 1, 3)]
    result = classify(rows, [None, None, None, None])
    assert result.new == [rows[0], rows[2]]
    assert result.replayed == []
    assert result.duplicates == [rows[1].position, rows[3].position]


def test_classify_owned_by_this_position_is_replayed() -> None:
    rows = [row("e1", 2, 100, 0), row("e2", 2, 100, 1)]
    result = classify(rows, ["2:100:0", "2:100:1"])
    assert result.new == []
    assert result.replayed == rows
    assert result.duplicates == []


def test_classify_owned_elsewhere_is_a_duplicate() -> None:
    rows = [row("e1", 2, 100, 0), row("e2", 2, 101, 0), row("e3", 2, 102, 0)]
    # another offset, another batch index, another partition
    result = classify(rows, ["2:99:0", "2:101:1", "1:102:0"])
    assert result.new == []
    assert result.replayed == []
    assert result.duplicates == [r.position for r in rows]


def test_classify_mixed_batch() -> None:
    rows = [
        row("e1", 0, 5),  # new
        row("e2", 0, 6),  # counted here before a crash: replayed
        row("e3", 0, 7),  # counted at another position: duplicate
        row("e1", 0, 8),  # second occurrence of a new id: duplicate
        row("e2", 0, 9),  # same id as the replayed one, but owned by 0:6:0: duplicate
    ]
    result = classify(rows, [None, "0:6:0", "0:1:0", None, "0:6:0"])
    assert result.new == [rows[0]]
    assert result.replayed == [rows[1]]
    assert result.duplicates == [rows[2].position, rows[3].position, rows[4].position]


def test_classify_lengths_must_agree() -> None:
    with pytest.raises(ValueError):
        classify([row("e1", 0, 1)], [])


@given(
    spec=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["none", "self", "other"])
        ),
        max_size=20,
    )
)
def test_classify_property(spec: list[tuple[str, str]]) -> None:
    rows = [row(event_id, 0, offset) for offset, (event_id, _) in enumerate(spec)]
    owners = [
        None if kind == "none" else f"0:{offset}:0" if kind == "self" else "9:9:9"
        for offset, (_, kind) in enumerate(spec)
    ]
    expected_new, expected_replayed, expected_duplicates, seen = [], [], [], []
    for r, (event_id, kind) in zip(rows, spec, strict=True):
        if kind == "none" and event_id not in seen:
            seen.append(event_id)
            expected_new.append(r)
        elif kind == "self":
            expected_replayed.append(r)
        else:
            expected_duplicates.append(r.position)
    result = classify(rows, owners)
    assert result.new == expected_new
    assert result.replayed == expected_replayed
    assert result.duplicates == expected_duplicates
    assert len(result.new) + len(result.replayed) + len(result.duplicates) == len(rows)


# -- written_windows -------------------------------------------------------------------------


def test_written_windows_empty() -> None:
    assert written_windows([]) == ({}, {})


def test_written_windows_fixed() -> None:
    rows = [
        row("e1", 0, 1, at=T0 + 5 * HOUR + 10),
        row("e2", 0, 2, at=T0 + 3 * HOUR),  # older, later offset: not the newest
        row("e3", 1, 1, at=T0 + HOUR - 1),
        row("e4", 1, 2, at=T0 + 5 * HOUR + 59 * 60_000),
        row("e5", 3, 1, at=T0 - 1),
    ]
    newest, per_hour = written_windows(rows)
    assert newest == {0: T0 + 5 * HOUR + 10, 1: T0 + 5 * HOUR + 59 * 60_000, 3: T0 - 1}
    assert per_hour == {
        T0 + 5 * HOUR: 2,
        T0 + 3 * HOUR: 1,
        T0: 1,
        T0 - HOUR: 1,
    }


@given(
    events=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 86_400_000 - 1)), min_size=1, max_size=40
    )
)
def test_written_windows_property(events: list[tuple[int, int]]) -> None:
    rows = [row(f"e{i}", p, i, at=T0 + offset) for i, (p, offset) in enumerate(events)]
    newest, per_hour = written_windows(rows)
    expected_newest: dict[int, int] = {}
    expected_per_hour = {T0 + h * HOUR: 0 for h in range(24)}
    for p, offset in events:
        expected_newest[p] = max(expected_newest.get(p, -1), T0 + offset)
        expected_per_hour[T0 + (offset // HOUR) * HOUR] += 1
    assert newest == expected_newest
    assert per_hour == {hour: n for hour, n in expected_per_hour.items() if n}
    assert sum(per_hour.values()) == len(rows)


# -- chunks ----------------------------------------------------------------------------------


def fake(size: int | None) -> SimpleNamespace:
    value = None if size is None else b"x" * size
    return SimpleNamespace(message=SimpleNamespace(value=value))


def sizes_of(runs: list) -> list[list[int]]:
    return [[len(e.message.value or b"") for e in run] for run in runs]


def test_chunks_empty() -> None:
    assert chunks([], 10) == []


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "expected"),
    [
        ([3, 3, 3], 6, [[3, 3], [3]]),
        ([3, 3, 3], 9, [[3, 3, 3]]),
        ([3, 3, 3], 8, [[3, 3], [3]]),
        ([3, 3, 3], 2, [[3], [3], [3]]),
        ([10], 5, [[10]]),
        ([2, 10, 2], 5, [[2], [10], [2]]),
        ([10, 2, 2], 5, [[10], [2, 2]]),
        ([2, 2, 10], 5, [[2, 2], [10]]),
        ([1, 4, 5, 0, 5], 5, [[1, 4], [5, 0], [5]]),
        ([0, 0, 0], 0, [[0, 0, 0]]),
    ],
)
def test_chunks_fixed(sizes: list[int], max_bytes: int, expected: list[list[int]]) -> None:
    assert sizes_of(chunks([fake(s) for s in sizes], max_bytes)) == expected


def test_chunks_none_value_counts_as_empty() -> None:
    events = [fake(4), fake(None), fake(1), fake(4)]
    runs = chunks(events, 5)
    assert [list(run) for run in runs] == [events[:3], events[3:]]


def test_chunks_keep_identity_and_order() -> None:
    events = [fake(3) for _ in range(5)]
    runs = chunks(events, 7)
    assert [list(run) for run in runs] == [events[0:2], events[2:4], events[4:5]]
    assert all(a is b for a, b in zip([e for run in runs for e in run], events, strict=True))


@given(sizes=st.lists(st.integers(0, 20) | st.none(), max_size=30), max_bytes=st.integers(0, 40))
def test_chunks_property(sizes: list[int | None], max_bytes: int) -> None:
    events = [fake(s) for s in sizes]
    runs = chunks(events, max_bytes)
    # consecutive runs covering every event, in order, none empty
    assert [e for run in runs for e in run] == events
    assert all(len(run) > 0 for run in runs)
    totals = [sum(len(e.message.value or b"") for e in run) for run in runs]
    for run, total in zip(runs, totals, strict=True):
        assert total <= max_bytes or len(run) == 1
    # greedy: the first event of each run would not have fit in the run before it
    for before, total, after in zip(runs, totals, runs[1:], strict=False):
        assert total + len(after[0].message.value or b"") > max_bytes, (before, after)


def test_a_chunks_spans_per_partition_with_the_newest_append_time() -> None:
    messages = [
        Message(0, 7, None, b"", 1_000, True),
        Message(1, 3, None, b"", 500, False),  # create time: unknown
        Message(0, 5, None, b"", 2_000, True),
        Message(1, 4, None, b"", None, False),
        Message(2, 9, None, b"", None, True),  # no timestamp at all
    ]
    assert _spans(messages) == {0: Span(5, 7, 2_000), 1: Span(3, 4, -1), 2: Span(9, 9, -1)}
