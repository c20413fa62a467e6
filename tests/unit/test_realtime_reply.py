"""The real-time read's reply (aggregators/query/realtime.py, ``_WINDOW_TOTALS``): field, total,
field, ..., each total as the text Redis writes a double in a reply (``%.17g`` on 7.0, the
shortest round trip on 7.2+), read back as the very double."""

from __future__ import annotations

import pytest

from aggregators.query.realtime import _Read

READ = _Read.at("acme", ("transcription",), 1_764_288_030_000)


@pytest.mark.parametrize(
    "written",
    [b"0.10000000000000001", b"0.1"],  # 7.0's text, 7.2's
)
def test_a_total_reads_back_as_the_double_redis_wrote(written: bytes) -> None:
    reply = [b"received", b"4", b"cost_sum", written,
             b"stage:transcription:duration_sum", b"1.0000000000000001e+300",
             b"stage:transcription:duration_n", b"3"]  # fmt: skip
    view = READ.view(reply)
    assert (view["artifacts_received"], view["ai_cost_usd"]) == (4, 0.1)
    assert view["stages"]["transcription"]["avg_duration_ms"] == 1e300 / 3


def test_a_reply_of_odd_length_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter"):
        READ.view([b"received", b"4", b"cost_sum"])
