"""A mergeable latency sketch with a relative-error guarantee (DDSketch-style log buckets).

A sample x > 0 falls in bucket ``ceil(log_gamma(x))``; 0 has a bucket of its own. A
quantile read from the sketch is within ``RELATIVE_ACCURACY`` (0.5 %) of the sample it
stands for, so merged percentiles stay inside CONTRACT §4's 1 %. Sketches merge by adding
counts per bucket, which ClickHouse does with ``sumMap``; ``BUCKET_SQL`` is the same
bucketing in SQL, so the store builds sketches without shipping samples out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

RELATIVE_ACCURACY = 0.005
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
ZERO_BUCKET = -(2**31)
_LOG_GAMMA = math.log(GAMMA)


def bucket_sql(column: str) -> str:
    """The bucket of ``column`` as a ClickHouse Int32 expression."""
    return (
        f"if({column} > 0, toInt32(ceil(log({column}) / {_LOG_GAMMA!r})), toInt32({ZERO_BUCKET}))"
    )


def bucket(sample: float) -> int:
    return math.ceil(math.log(sample) / _LOG_GAMMA) if sample > 0 else ZERO_BUCKET


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
