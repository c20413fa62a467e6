"""docs/events.md is right when pasted: its examples decode as it says, and it names every
reason code and event type."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from consumers.decode import AcceptedEvent, RejectedPayload, decode_message
from voicemon.event import EventType, RejectReason
from voicemon.event_builders import check_event
from voicemon.producer_errors import InvalidEvent
from voicemon.settings import DEFAULT_STAGES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
DECIDED_AT_MS = int(datetime(2026, 11, 28, 16, 5, tzinfo=UTC).timestamp() * 1000)
STAGES = frozenset(DEFAULT_STAGES)
EXAMPLES = re.findall(r"<!-- example: (accepted|rejected \w+) -->\n```json\n(.*?)\n```", DOC,
                      re.DOTALL)  # fmt: skip


def test_the_doc_has_examples_of_each_verdict() -> None:
    verdicts = {verdict for verdict, _ in EXAMPLES}
    assert len(EXAMPLES) >= 10 and "accepted" in verdicts and len(verdicts) >= 8


@pytest.mark.parametrize(("verdict", "text"), EXAMPLES)
def test_each_example_decodes_as_the_doc_says(verdict: str, text: str) -> None:
    decoded = decode_message(text.encode(), now_ms=DECIDED_AT_MS, stages=STAGES)
    if verdict == "accepted":
        assert decoded and all(isinstance(d, AcceptedEvent) for d in decoded), decoded
        return
    reason = RejectReason(verdict.removeprefix("rejected "))
    assert isinstance(decoded[0], RejectedPayload) and decoded[0].rejection.reason == reason
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    if isinstance(value, dict):  # the producer library refuses it with the same reason
        with pytest.raises(InvalidEvent) as caught:
            check_event(value, stages=STAGES, now_ms=DECIDED_AT_MS)
        assert caught.value.reason == reason


def test_every_reason_code_and_event_type_is_in_its_table() -> None:
    for reason in RejectReason:
        assert f"\n| `{reason.value}` |" in DOC, reason
    for event_type in EventType:
        assert f"\n| `{event_type.value}` |" in DOC, event_type
