"""The DLQ tools' pure core (runtime/cli/dlq_records.py, dlq_fixups.py): headers,
selection, fix-ups, verdicts by the worker's own decoder, summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime.cli.dlq_fixups import (
    Fixed,
    Unfixable,
    fix_up,
    judge,
    load_callable,
    load_patch,
    patch_fixup,
    plan_step,
    replay_headers,
)
from runtime.cli.dlq_records import (
    UNKNOWN_REASON,
    DeadLetterRecord,
    DlqToolError,
    OffsetRange,
    Selection,
    count_by_reason,
    dead_letter,
    latest,
    parse_offsets,
    parse_time_arg,
    read_span,
    rfc3339,
    selection,
    tail_line,
)

NOW = 1_795_900_000_000  # 2026-11-28T..., the clock of every verdict here
STAGES = ("transcription", "claims_extraction")
ADD_ARTIFACT = [{"op": "add", "path": "/artifact_id", "value": "art-fixed"}]


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "event_type": "artifact_received", "occurred_at": NOW - 1000,
            "artifact_id": "a1", **fields}  # fmt: skip


def letter(
    value: bytes | None = b"{}",
    reason: str = "missing_field",
    partition: int = 0,
    offset: int = 0,
    at: int | None = NOW,
    batch_index: int | None = None,
) -> DeadLetterRecord:
    headers = [("voicemon-reason", reason.encode()), ("voicemon-detail", b"x: the detail"),
               ("voicemon-source-partition", b"3"), ("voicemon-source-offset", b"41")]  # fmt: skip
    if batch_index is not None:
        headers.append(("voicemon-batch-index", str(batch_index).encode()))
    return dead_letter(partition, offset, at, b"key", value, headers)


def missing_artifact() -> bytes:
    body = event()
    del body["artifact_id"]
    return orjson.dumps(body)


# -- reading ------------------------------------------------------------------------------


def test_headers_are_read_as_the_worker_writes_them() -> None:
    record = letter(orjson.dumps(event()), batch_index=2)
    assert (record.reason, record.detail) == ("missing_field", "x: the detail")
    assert (record.source_partition, record.source_offset, record.batch_index) == (3, 41, 2)
    assert record.source == "3:41[2]"
    assert record.event_id == "e1"


def test_a_record_without_voicemon_headers_reads_as_unknown() -> None:
    record = dead_letter(1, 5, None, None, b"x", None)
    assert (record.reason, record.detail, record.source) == (UNKNOWN_REASON, "", "-:-")
    assert record.batch_index is None and record.timestamp_ms is None


@pytest.mark.parametrize(
    "value", [None, b"", b"{not json", b"\xff\xfe", b"[1,2]", b'{"event_id": 7}', b'"e1"']
)
def test_event_id_is_none_unless_the_payload_is_an_object_with_a_string_id(
    value: bytes | None,
) -> None:
    assert letter(value).event_id is None


def test_json_keeps_every_field_and_non_utf8_bytes_losslessly() -> None:
    shown = letter(b"\xff\xfe", reason="invalid_utf8").to_json()
    assert shown["value"] is None and shown["value_hex"] == "fffe"
    assert shown["time"] == rfc3339(NOW) and shown["time"].endswith("Z")
    assert {"dlq_partition", "dlq_offset", "reason", "detail", "source_partition",
            "source_offset", "batch_index", "event_id", "key"} <= set(shown)  # fmt: skip
    assert "value_hex" not in letter(b"{}").to_json()


def test_tail_line_names_reason_source_event_and_detail() -> None:
    line = tail_line(letter(orjson.dumps(event()), partition=1, offset=7, batch_index=0))
    assert line == (f"{rfc3339(NOW)} missing_field dlq=1:7 source=3:41[0] event_id=e1 "
                    "— x: the detail")  # fmt: skip


# -- selecting ----------------------------------------------------------------------------


def test_selection_needs_every_condition_given() -> None:
    chosen = Selection(frozenset({"missing_field"}), NOW - 10, NOW + 10, (OffsetRange(0, 5, 9),))
    assert chosen.matches(letter(offset=5))
    assert not chosen.matches(letter(offset=10))
    assert not chosen.matches(letter(offset=5, partition=1))
    assert not chosen.matches(letter(offset=5, reason="too_late"))
    assert not chosen.matches(letter(offset=5, at=NOW - 11))
    assert not chosen.matches(letter(offset=5, at=NOW + 11))
    assert not chosen.matches(letter(offset=5, at=None))
    assert Selection().matches(letter(at=None)) and Selection().empty
    assert not Selection(since_ms=0).empty


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", NOW - 90_000), ("15m", NOW - 900_000), ("2h", NOW - 7_200_000),
     ("7d", NOW - 7 * 86_400_000), ("1795899999000", 1_795_899_999_000),
     ("2026-11-28T00:00:00Z", 1_795_824_000_000)],
)  # fmt: skip
def test_times_are_durations_back_rfc3339_or_epoch_ms(text: str, expected: int) -> None:
    assert parse_time_arg(text, "since", NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "15 m", "-5m", "2026-11-28T00:00:00", "1.5h"])
def test_a_bad_time_is_one_sentence_naming_the_option(text: str) -> None:
    with pytest.raises(DlqToolError, match=r"^--since: expected"):
        parse_time_arg(text, "since", NOW)


def test_offsets_are_one_record_or_an_inclusive_range() -> None:
    assert parse_offsets("2:15") == OffsetRange(2, 15, 15)
    assert parse_offsets("0:10-20") == OffsetRange(0, 10, 20)
    for bad in ("2", "2:", "a:1", "1:5-2", "1:-3"):
        with pytest.raises(DlqToolError, match="--offset"):
            parse_offsets(bad)


def test_selection_refuses_unknown_reasons_and_an_inverted_range() -> None:
    with pytest.raises(DlqToolError, match="'missing' is not a reason code; use one of"):
        selection(["missing"], None, None, [], NOW)
    with pytest.raises(DlqToolError, match="--since must not be after --until"):
        selection([], "1h", "2h", [], NOW)
    chosen = selection(["too_late", "missing_field"], "2h", "1h", ["1:3"], NOW)
    assert chosen == Selection(frozenset({"too_late", "missing_field"}), NOW - 7_200_000,
                               NOW - 3_600_000, (OffsetRange(1, 3, 3),))  # fmt: skip


def test_read_span_starts_at_the_low_offset_a_time_or_the_last_records() -> None:
    marks = {0: (5, 100), 1: (0, 3), 2: (7, 7)}
    assert read_span(marks, Selection()) == ({0: 5, 1: 0, 2: 7}, {0: 100, 1: 3, 2: 7})
    assert read_span(marks, Selection(), {0: 50, 1: 3, 2: 7})[0] == {0: 50, 1: 3, 2: 7}
    assert read_span(marks, Selection(), {0: 0, 1: 0, 2: 0})[0] == {0: 5, 1: 0, 2: 7}
    assert read_span(marks, Selection(), last=10)[0] == {0: 90, 1: 0, 2: 7}


def test_read_span_narrows_to_the_offsets_selected() -> None:
    marks = {0: (5, 100), 1: (0, 30)}
    chosen = Selection(offsets=(OffsetRange(0, 10, 12), OffsetRange(0, 40, 40)))
    starts, ends = read_span(marks, chosen)
    assert (starts[0], ends[0]) == (10, 41)
    assert starts[1] == ends[1]  # nothing read from an unselected partition
    beyond = read_span(marks, Selection(offsets=(OffsetRange(1, 50, 60),)))
    assert beyond[0][1] == beyond[1][1]


def test_latest_keeps_the_newest_by_time_oldest_first() -> None:
    records = [letter(offset=i, at=NOW + (i * 7) % 10, partition=i % 2) for i in range(10)]
    newest = latest(iter(records), 3)
    assert [r.timestamp_ms for r in newest] == [NOW + 7, NOW + 8, NOW + 9]
    assert latest(iter(records), 50) == sorted(
        records, key=lambda r: (r.timestamp_ms, r.partition, r.offset)
    )


# -- fixing up ----------------------------------------------------------------------------


def test_a_patch_fixes_an_event_and_the_worker_accepts_it() -> None:
    fixed = fix_up(missing_artifact(), patch_fixup(ADD_ARTIFACT))
    assert isinstance(fixed, Fixed) and fixed.value is not None
    assert orjson.loads(fixed.value)["artifact_id"] == "art-fixed"
    assert judge(fixed.value, NOW, STAGES).passes


def test_a_patch_applies_to_each_event_of_a_batch() -> None:
    batch = orjson.dumps([orjson.loads(missing_artifact()), 17, orjson.loads(missing_artifact())])
    fixed = fix_up(batch, patch_fixup(ADD_ARTIFACT))
    assert isinstance(fixed, Fixed) and fixed.value is not None
    assert [e if e == 17 else e["artifact_id"] for e in orjson.loads(fixed.value)] == [
        "art-fixed", 17, "art-fixed"
    ]  # fmt: skip
    verdict = judge(fixed.value, NOW, STAGES)
    assert not verdict.passes and verdict.problems == (
        "[1] not_an_object: event must be a JSON object, got a number",
    )


def test_an_envelope_is_never_replayed_even_when_asked_to_send_invalid() -> None:
    """A truncated letter (CONTRACT §3.3) holds only the original's first 64 KiB: replaying
    it would publish a different message."""
    whole = letter(orjson.dumps(event()))
    headers = [("voicemon-reason", b"too_large"), ("voicemon-source-partition", b"3"),
               ("voicemon-source-offset", b"41"), ("voicemon-truncated", b"1")]  # fmt: skip
    envelope = dead_letter(0, 1, NOW, b"key", orjson.dumps(event()), headers)
    assert not whole.truncated and envelope.truncated
    assert plan_step(whole, None, NOW, STAGES).send
    step = plan_step(envelope, None, NOW, STAGES, send_invalid=True)
    assert not step.send and "voicemon-truncated" in step.why


def test_without_a_fixup_the_bytes_stay_untouched() -> None:
    assert fix_up(b"\xff{ x", None) == Fixed(b"\xff{ x")
    assert fix_up(None, None) == Fixed(None)


@pytest.mark.parametrize(
    ("value", "patch", "problem"),
    [
        (b"{not json", ADD_ARTIFACT, "the payload is not JSON"),
        (None, ADD_ARTIFACT, "no value"),
        (b'"just a string"', ADD_ARTIFACT, "neither an event object nor a batch"),
        (orjson.dumps(event()), [{"op": "remove", "path": "/nothing"}], "does not apply"),
        (orjson.dumps(event()), [{"op": "test", "path": "/event_id", "value": "e2"}],
         "does not apply"),
        (orjson.dumps(event()), [{"op": "replace", "path": "", "value": 5}],
         "the fix-up raised ValueError: the patch must leave an event object"),
    ],
)  # fmt: skip
def test_what_a_patch_cannot_fix_is_said(value: bytes | None, patch: Any, problem: str) -> None:
    outcome = fix_up(value, patch_fixup(patch))
    assert isinstance(outcome, Unfixable) and problem in outcome.problem


@pytest.mark.parametrize(
    "document", [{"op": "add"}, [{"op": "teleport", "path": "/a"}], [{"op": "add"}], "x", 5]
)
def test_a_malformed_patch_is_refused_before_anything_is_read(document: object) -> None:
    with pytest.raises(DlqToolError, match="not an RFC 6902 JSON patch"):
        patch_fixup(document)


def test_patch_files_are_read_or_refused_in_one_sentence(tmp_path: Path) -> None:
    good = tmp_path / "fix.json"
    good.write_bytes(orjson.dumps(ADD_ARTIFACT))
    assert isinstance(fix_up(missing_artifact(), load_patch(good)), Fixed)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DlqToolError, match="is not JSON"):
        load_patch(tmp_path / "bad.json")
    with pytest.raises(DlqToolError, match="cannot read the patch file"):
        load_patch(tmp_path / "absent.json")


def test_a_fixup_callable_from_a_file_fixes_drops_or_fails(tmp_path: Path) -> None:
    module = tmp_path / "fixes.py"
    module.write_text(
        "def fix(event):\n"
        "    if event['event_id'] == 'drop':\n"
        "        return None\n"
        "    if event['event_id'] == 'boom':\n"
        "        raise KeyError('nope')\n"
        "    return {**event, 'artifact_id': 'from-callable'}\n"
    )
    fix = load_callable(f"{module}:fix")
    fixed = fix_up(missing_artifact(), fix)
    assert isinstance(fixed, Fixed) and fixed.value is not None
    assert orjson.loads(fixed.value)["artifact_id"] == "from-callable"
    assert fix_up(orjson.dumps(event(event_id="drop")), fix) == Unfixable(
        "the fix-up left this event out"
    )
    batch = orjson.dumps([event(event_id="drop"), event(event_id="kept")])
    fixed_batch = fix_up(batch, fix)
    assert isinstance(fixed_batch, Fixed) and fixed_batch.value is not None
    assert [e["event_id"] for e in orjson.loads(fixed_batch.value)] == ["kept"]
    failed = fix_up(orjson.dumps(event(event_id="boom")), fix)
    assert isinstance(failed, Unfixable) and "raised KeyError" in failed.problem


def test_a_fixup_module_is_imported_by_name() -> None:
    fix = load_callable("json:loads")
    assert callable(fix)
    for bad, message in [("json", "MODULE:FUNCTION"), ("no_such_module_x:f", "cannot import"),
                         ("json:no_such_function", "no callable named")]:  # fmt: skip
        with pytest.raises(DlqToolError, match=message):
            load_callable(bad)


# -- judging and planning -----------------------------------------------------------------


def test_judge_is_the_workers_decision_now() -> None:
    assert judge(orjson.dumps(event()), NOW, STAGES).passes
    assert str(judge(orjson.dumps(event()), NOW, STAGES)) == "passes"
    late = judge(orjson.dumps(event(occurred_at=NOW - 49 * 3_600_000)), NOW, STAGES)
    assert late.problems == ("too_late: occurred_at: older than the 48 hour retention",)
    assert judge(None, NOW, STAGES).problems == ("invalid_json: record has no value",)
    stage = judge(orjson.dumps(event(event_type="stage_started", stage="mixing")), NOW, STAGES)
    assert stage.problems[0].startswith("unknown_stage:")


def test_a_replay_sends_what_passes_and_skips_what_would_be_rejected_again() -> None:
    broken = letter(missing_artifact(), partition=2, offset=9)
    fix = patch_fixup(ADD_ARTIFACT)
    sent = plan_step(broken, fix, NOW, STAGES)
    assert sent.send and sent.verdict is not None and sent.verdict.passes
    assert sent.to_json(dry_run=True)["action"] == "would send"
    assert sent.to_json(dry_run=False)["action"] == "sent"
    skipped = plan_step(broken, None, NOW, STAGES)
    assert not skipped.send and skipped.why == "the worker would reject it again"
    assert skipped.to_json(dry_run=False)["problems"] == [
        "missing_field: artifact_id: required field is missing"
    ]
    assert plan_step(broken, None, NOW, STAGES, send_invalid=True).send
    unfixable = plan_step(letter(b"{oops"), fix, NOW, STAGES, send_invalid=True)
    assert not unfixable.send and unfixable.verdict is None
    assert unfixable.to_json(dry_run=True)["passes"] is None
    assert replay_headers(broken) == [("voicemon-replay-of", b"2:9")]


def test_counts_by_reason_most_frequent_first_with_the_newest_detail() -> None:
    records = [
        letter(reason="too_late", at=NOW + 5),
        letter(reason="missing_field", at=NOW),
        letter(reason="too_late", at=NOW + 1),
        letter(reason="invalid_json", at=None),
    ]
    counts = count_by_reason(records)
    assert [(c.reason, c.messages) for c in counts] == [
        ("too_late", 2), ("invalid_json", 1), ("missing_field", 1)
    ]  # fmt: skip
    assert (counts[0].first_ms, counts[0].last_ms) == (NOW + 1, NOW + 5)
    assert counts[1].to_json() == {"reason": "invalid_json", "messages": 1, "first_seen": None,
                                   "last_seen": None, "latest_detail": ""}  # fmt: skip
