"""A mergeable latency sketch with a relative-error guarantee and a bounded size
(DDSketch-style log buckets).

A sample x >= ``FLOOR_MS`` falls in bucket ``ceil(log_gamma(x))``; smaller samples (0, and
anything below one microsecond, down to 5e-324) share the zero bucket, which reads 0. Since a
sample is at most ``MAX_SAMPLE_MS`` (86,400,000, the validator's bound, CONTRACT §3), every
sketch holds at most ``MAX_KEY - MIN_KEY + 2`` buckets (2,520) whatever its samples: the size of a
snapshot record is bounded by construction (``snapshot_rows.worst_case_record_bytes``).

A quantile read from the sketch is within ``RELATIVE_ACCURACY`` (0.5 %) of the sample it
stands for when that sample is at least ``FLOOR_MS``, so merged percentiles stay inside
CONTRACT §4's 1 %; a percentile whose sample is below the floor reads 0 (an absolute error
under 1 µs). Hourly percentiles never use the sketch: they are exact, from the raw events.

Sketches merge by adding counts per bucket, which ClickHouse does with ``sumMap``;
``bucket_sql`` is the same bucketing in SQL, so the store builds sketches without shipping
samples out. Sketches stored before the floor existed (with buckets below it) stay readable
as they are; ``bounded`` folds such buckets into the zero bucket when a merge writes a new
row, so every row written from now on is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

RELATIVE_ACCURACY = 0.005
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
ZERO_BUCKET = -(2**31)
FLOOR_MS = 1e-3  # one microsecond: the smallest sample the sketch tells from 0
MAX_SAMPLE_MS = 86_400_000  # the largest duration the validator accepts (CONTRACT §3)
_LOG_GAMMA = math.log(GAMMA)
MIN_KEY = math.ceil(math.log(FLOOR_MS) / _LOG_GAMMA)
MAX_KEY = math.ceil(math.log(MAX_SAMPLE_MS) / _LOG_GAMMA)


def bucket_sql(column: str) -> str:
    """The bucket of ``column`` as a ClickHouse Int32 expression (``bucket`` in SQL)."""
    key = f"toInt32(least(ceil(log({column}) / {_LOG_GAMMA!r}), {MAX_KEY}))"
    return f"if({column} >= {FLOOR_MS!r}, {key}, toInt32({ZERO_BUCKET}))"


def bucket(sample: float) -> int:
    if not sample >= FLOOR_MS:
        return ZERO_BUCKET
    return min(math.ceil(math.log(sample) / _LOG_GAMMA), MAX_KEY)


def bounded(sketch: Mapping[int, int]) -> dict[int, int]:
    """``sketch`` with any bucket outside [MIN_KEY, MAX_KEY] folded into the zero bucket or
    the last bucket (only sketches stored before the floor have such buckets)."""
    out: dict[int, int] = {}
    for key, count in sketch.items():
        folded = ZERO_BUCKET if key < MIN_KEY else min(key, MAX_KEY)
        out[folded] = out.get(folded, 0) + count
    return out


def nearest_rank(n: int, p: float) -> int:
    """0-based index of the p-quantile among n sorted samples: floor(p * n), capped at n - 1."""
    return min(math.floor(Fraction(str(p)) * n), n - 1)


def quantile(sketch: Mapping[int, int], p: float) -> float:
    """The nearest-rank p-quantile estimated from ``sketch``; 0 when it is empty."""
    total = sum(sketch.values())
    if total == 0:
        return 0.0
    rank = nearest_rank(total, p)
    seen = 0
    for key in sorted(sketch):
        seen += sketch[key]
        if seen > rank:
            return 0.0 if key == ZERO_BUCKET else 2 * GAMMA**key / (GAMMA + 1)
    raise AssertionError("unreachable: rank < total")
