"""The latency sketch (voicemon/sketch.py): buckets, nearest rank, quantiles within 1 %."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemon.sketch import ZERO_BUCKET, bucket, nearest_rank, quantile

GAMMA = 1.005 / 0.995


def sketch_of(samples: list[float]) -> dict[int, int]:
    return dict(Counter(bucket(x) for x in samples))


def exact(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    n = len(ordered)
    return ordered[min(math.floor(p * n), n - 1)]


# -- bucket ----------------------------------------------------------------------------------


def test_bucket_fixed() -> None:
    assert bucket(0.0) == ZERO_BUCKET
    assert bucket(-1.0) == ZERO_BUCKET
    assert bucket(1.0) == 0
    assert bucket(GAMMA**10 * 1.0001) == 11
    assert bucket(GAMMA**10 / 1.0001) == 10
    assert bucket(1 / GAMMA**5 * 1.0001) == -4


@given(x=st.floats(min_value=0.001, max_value=1e7))
def test_bucket_bounds_the_sample(x: float) -> None:
    k = bucket(x)
    # x lies in (gamma^(k-1), gamma^k], allowing for floating-point rounding at the edges
    assert GAMMA ** (k - 1) <= x * (1 + 1e-9)
    assert x <= GAMMA**k * (1 + 1e-9)


@given(a=st.floats(min_value=0.0, max_value=1e7), b=st.floats(min_value=0.0, max_value=1e7))
def test_bucket_is_monotonic(a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    assert bucket(low) <= bucket(high)


# -- nearest_rank ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "p", "rank"),
    [
        (1, 0.5, 0),
        (1, 0.99, 0),
        (2, 0.5, 1),
        (10, 0.5, 5),
        (10, 0.95, 9),
        (10, 0.99, 9),
        (100, 0.95, 95),
        (100, 0.99, 99),
        (100, 0.29, 29),  # 0.29 * 100 is 28.999999999999996 in floats
        (200, 0.99, 198),
        (1000, 1.0, 999),
        (7, 0.0, 0),
    ],
)
def test_nearest_rank_fixed(n: int, p: float, rank: int) -> None:
    assert nearest_rank(n, p) == rank


@given(n=st.integers(1, 100_000), percent=st.integers(0, 100))
def test_nearest_rank_matches_integer_arithmetic(n: int, percent: int) -> None:
    assert nearest_rank(n, percent / 100) == min(percent * n // 100, n - 1)


# -- quantile --------------------------------------------------------------------------------


def test_quantile_empty_sketch() -> None:
    assert quantile({}, 0.5) == 0.0
    assert quantile({}, 0.99) == 0.0
    assert quantile({5: 0}, 0.5) == 0.0


def test_quantile_all_zeros() -> None:
    sketch = sketch_of([0.0] * 17)
    assert sketch == {ZERO_BUCKET: 17}
    for p in (0.5, 0.95, 0.99):
        assert quantile(sketch, p) == 0.0


def test_quantile_fixed_samples() -> None:
    samples = [100.0] * 50 + [200.0] * 45 + [1000.0] * 5
    sketch = sketch_of(samples)
    assert quantile(sketch, 0.5) == pytest.approx(200.0, rel=0.01)
    assert quantile(sketch, 0.95) == pytest.approx(1000.0, rel=0.01)
    assert quantile(sketch, 0.99) == pytest.approx(1000.0, rel=0.01)
    assert quantile(sketch, 0.49) == pytest.approx(100.0, rel=0.01)


def test_quantile_zeros_below_positive() -> None:
    sketch = sketch_of([0.0] * 60 + [50.0] * 40)
    assert quantile(sketch, 0.5) == 0.0
    assert quantile(sketch, 0.95) == pytest.approx(50.0, rel=0.01)


def test_quantile_merging_adds_counts() -> None:
    left, right = [10.0] * 10, [1000.0] * 90
    merged = Counter(sketch_of(left))
    merged.update(sketch_of(right))
    assert quantile(dict(merged), 0.05) == pytest.approx(10.0, rel=0.01)
    assert quantile(dict(merged), 0.5) == pytest.approx(1000.0, rel=0.01)


samples_strategy = st.lists(
    st.floats(min_value=0.001, max_value=1e7) | st.just(0.0), min_size=1, max_size=300
)


@pytest.mark.parametrize("p", [0.5, 0.95, 0.99])
@given(samples=samples_strategy)
def test_quantile_within_one_percent_of_nearest_rank(p: float, samples: list[float]) -> None:
    expected = exact(samples, p)
    estimate = quantile(sketch_of(samples), p)
    if expected == 0.0:
        assert estimate == 0.0
    else:
        assert abs(estimate - expected) <= 0.01 * expected, (estimate, expected)


# -- bounded size (issue 16, item 9) ---------------------------------------------------------

FLOOR = 1e-3  # the documented floor (voicemon.sketch.FLOOR_MS): one microsecond
# log_gamma(86,400,000 / floor) + 1 log buckets, and the zero bucket
BOUND = math.ceil(math.log(86_400_000 / FLOOR) / math.log(GAMMA)) + 2
EXTREMES = [0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 1e-12, 1e-6, FLOOR, 1.0, 86_400_000.0]


def test_any_mix_of_valid_durations_fills_at_most_a_few_thousand_buckets() -> None:
    # Every double between the smallest subnormal and 1 ms (~10^308 distinct values before,
    # each its own bucket), then a log-spaced sweep up to the validator's maximum.
    tiny = [math.ldexp(5e-324, i) for i in range(1075)] + [
        math.ldexp(3e-324, i) for i in range(1075)
    ]
    sweep = [FLOOR * 1.001**i for i in range(26_000)]
    buckets = {bucket(x) for x in [*EXTREMES, *tiny, *sweep] if x <= 86_400_000}
    assert 2500 < len(buckets) <= BOUND == 2521


@given(x=st.floats(min_value=0.0, max_value=86_400_000.0))
def test_every_valid_duration_falls_in_a_bucket_of_the_bounded_range(x: float) -> None:
    k = bucket(x)
    assert k == ZERO_BUCKET or math.ceil(math.log(FLOOR) / math.log(GAMMA)) <= k
    assert k <= math.ceil(math.log(86_400_000) / math.log(GAMMA))


def test_the_floor_is_the_smallest_sample_told_from_zero() -> None:
    below, above = math.nextafter(FLOOR, 0.0), math.nextafter(FLOOR, 1.0)
    assert bucket(below) == ZERO_BUCKET
    assert bucket(FLOOR) != ZERO_BUCKET and bucket(above) == bucket(FLOOR)
    assert quantile(sketch_of([below]), 0.5) == 0.0
    for x in (FLOOR, above):
        assert quantile(sketch_of([x]), 0.5) == pytest.approx(x, rel=0.005)


def test_the_largest_valid_duration_is_within_the_accuracy() -> None:
    top = 86_400_000.0
    assert quantile(sketch_of([top]), 0.99) == pytest.approx(top, rel=0.005)
    assert bucket(math.nextafter(top, 0.0)) == bucket(top) == bucket(top / 1.001)


extreme_samples = st.lists(
    st.floats(min_value=0.0, max_value=86_400_000.0) | st.sampled_from(EXTREMES),
    min_size=1,
    max_size=300,
)


@pytest.mark.parametrize("p", [0.5, 0.95, 0.99])
@given(samples=extreme_samples)
def test_quantile_of_extreme_mixes_is_within_one_percent_above_the_floor(
    p: float, samples: list[float]
) -> None:
    expected = exact(samples, p)
    estimate = quantile(sketch_of(samples), p)
    if expected < FLOOR:
        assert estimate == 0.0  # below one microsecond: reads 0
    else:
        assert abs(estimate - expected) <= 0.01 * expected, (estimate, expected)


def test_sketches_stored_before_the_floor_are_folded_into_the_zero_bucket() -> None:
    from voicemon.sketch import bounded

    old = {ZERO_BUCKET: 2, -74_000: 3, -691: 1, -690: 4, 5: 6, 1828: 1, 1900: 2}
    assert bounded(old) == {ZERO_BUCKET: 6, -690: 4, 5: 6, 1828: 3}
    assert sum(bounded(old).values()) == sum(old.values())
    assert quantile(bounded(old), 0.5) == quantile(old, 0.5) == pytest.approx(FLOOR, rel=0.01)
