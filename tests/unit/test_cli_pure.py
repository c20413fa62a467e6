"""The CLI's pure parsing (runtime/cli/api.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from runtime.cli.api import ttl_seconds
from voicemon.settings import Settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("1h", 3600),
        ("7d", 604_800),
        ("90s", 90),
        ("90", 90),
        ("0", 0),
        ("0m", 0),
        ("-5m", None),
        ("-5", None),
        ("٣h", None),  # other scripts' digits: int() reads them, a lifetime must not
        ("1_0m", None),
        ("", None),
        ("x", None),
        ("5x", None),
        ("m", None),
        ("h1", None),
        ("1.5h", None),
        ("30M", None),
        ("1h30m", None),
    ],
)
def test_ttl_seconds(text: str, seconds: int | None) -> None:
    assert ttl_seconds(text) == seconds


@given(n=st.integers(0, 10**6), unit=st.sampled_from(["", "s", "m", "h", "d"]))
def test_ttl_seconds_property(n: int, unit: str) -> None:
    factor = {"": 1, "s": 1, "m": 60, "h": 60 * 60, "d": 24 * 60 * 60}[unit]
    assert ttl_seconds(f"{n}{unit}") == n * factor


@pytest.mark.parametrize(
    "secret", ["REPLACE_ME", "changeme", "short", "x" * 31, "REPLACE_ME-with-padding-to-40-bytes!!"]
)
def test_a_weak_or_placeholder_jwt_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="jwt_secret"):
        Settings(jwt_secret=secret)


def test_a_strong_jwt_secret_is_accepted() -> None:
    assert Settings(jwt_secret="k" * 32).jwt_secret is not None
