"""The stored-ids filter (``consumers.stored_ids.IdFilter``), pure: no false negatives in any
span, bounded false positives at any rate, spans forgotten at their edge."""

from __future__ import annotations

import numpy as np
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.stored_ids import BLOCK_MS, MIN_CAPACITY, IdFilter, id_hashes

T = 1_800_000_000_000 // BLOCK_MS * BLOCK_MS  # the start of a span


def _at(ms: int, count: int) -> np.ndarray:
    return np.full(count, ms, dtype=np.int64)


def test_the_hash_is_xxh64_of_the_utf8_bytes() -> None:
    ids = ["evt-1", "é-ünïcode-✓", "x" * 128, ""]
    assert id_hashes(ids).tolist() == [xxhash.xxh64_intdigest(i.encode()) for i in ids]


@settings(max_examples=50, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.integers(0, 6 * BLOCK_MS), st.lists(st.text(min_size=1), max_size=50)),
        max_size=8,
    )
)
def test_every_id_added_is_held_whatever_its_span(batches: list[tuple[int, list[str]]]) -> None:
    kept = IdFilter()
    for offset, ids in batches:
        kept.add(_at(T + offset, len(ids)), id_hashes(ids))
    every = [event_id for _, ids in batches for event_id in ids]
    assert kept.may_hold(id_hashes(every)).all()


def test_a_span_outgrowing_its_filter_keeps_false_positives_rare() -> None:
    """Ten times the first guess, added in small steps: more filters, few false positives."""
    kept = IdFilter()
    added = [f"stored-{i}" for i in range(10 * MIN_CAPACITY)]
    for start in range(0, len(added), 5_000):
        step = added[start : start + 5_000]
        kept.add(_at(T + 1, len(step)), id_hashes(step))
    assert kept.may_hold(id_hashes(added)).all()
    probes = id_hashes([f"never-{i}" for i in range(200_000)])
    assert int(kept.may_hold(probes).sum()) <= 20  # 1e-4 at most; about 1e-5 expected
    assert kept.size_bytes < 10 * MIN_CAPACITY * 3 * 3  # ~3 bytes an id, with the doublings


def test_a_span_is_forgotten_once_it_ended_before_the_cutoff() -> None:
    kept = IdFilter()
    kept.add(_at(T, 1), id_hashes(["first-span"]))
    kept.add(_at(T + BLOCK_MS, 1), id_hashes(["second-span"]))
    kept.forget_before(T + BLOCK_MS - 1)  # the first span's last millisecond: kept
    assert kept.may_hold(id_hashes(["first-span", "second-span"])).tolist() == [True, True]
    kept.forget_before(T + BLOCK_MS)
    assert kept.may_hold(id_hashes(["first-span", "second-span"])).tolist() == [False, True]


def test_an_empty_filter_holds_nothing() -> None:
    assert IdFilter().may_hold(id_hashes(["a", "b"])).tolist() == [False, False]
