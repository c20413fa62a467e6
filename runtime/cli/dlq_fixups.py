"""Fixing dead letters up and judging them, pure: an RFC 6902 JSON patch or an operator's
Python callable applied to each event of a payload, the result judged by the worker's own
decoder (``consumers.decode.decode_message``) as of now, and the replay step decided."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonpatch
import jsonpointer
import orjson

from consumers.decode import RejectedPayload, decode_message
from runtime.cli.dlq_records import DeadLetterRecord, DlqToolError, utf8_or_none

REPLAY_HEADER = "voicemon-replay-of"  # "dlq_partition:dlq_offset" on a replayed message

# -- fixing up ----------------------------------------------------------------------------

Fixup = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Fixed:
    """The payload to replay (``None``/empty: the record had no value)."""

    value: bytes | None


@dataclass(frozen=True, slots=True)
class Unfixable:
    """Why a payload could not be fixed up; it is not replayed."""

    problem: str


def patch_fixup(document: object) -> Fixup:
    """A fix-up applying an RFC 6902 JSON patch (a list of operations) to each event."""
    try:
        # The constructor checks the document's shape itself (raising what is caught below).
        patch = jsonpatch.JsonPatch(cast("list[dict[str, Any]]", document))
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError,
            AttributeError, KeyError) as error:  # fmt: skip
        # e.g. a path without its leading "/": jsonpointer's "Location must start with /"
        raise DlqToolError(f"the patch is not an RFC 6902 JSON patch: {error}") from None

    def apply(event: dict[str, Any]) -> dict[str, Any]:
        patched = patch.apply(event)
        if not isinstance(patched, dict):
            raise ValueError("the patch must leave an event object")
        return patched

    return apply


def load_patch(path: Path) -> Fixup:
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as error:
        raise DlqToolError(f"cannot read the patch file {path}: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise DlqToolError(f"the patch file {path} is not JSON: {error.msg}") from None
    return patch_fixup(document)


def load_callable(spec: str) -> Fixup:
    """``module:function`` or ``path/to/file.py:function``: a callable that takes an event
    dict and returns the fixed dict (or None to leave that event out of the replay)."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise DlqToolError(f"--fixup: expected MODULE:FUNCTION or FILE.py:FUNCTION; got {spec!r}")
    try:
        if target.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location("voicemon_fixup", target)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load {target}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except (ImportError, OSError, SyntaxError) as error:
        raise DlqToolError(f"--fixup: cannot import {target}: {error}") from None
    except Exception as error:  # the operator's module itself failed while it loaded
        raise DlqToolError(
            f"--fixup: {target} raised {type(error).__name__} while loading: {error}; fix the "
            "module (it runs once, before any record is read)"
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise DlqToolError(f"--fixup: {target} has no callable named {name}")
    return function  # type: ignore[no-any-return]


def fix_up(value: bytes | None, fixup: Fixup | None) -> Fixed | Unfixable:
    """The payload after ``fixup``: applied to the event if the payload is one JSON object,
    to each object element if it is a batch. Without a fix-up the bytes stay untouched."""
    if fixup is None:
        return Fixed(value)
    if not value:
        return Unfixable("the record has no value to fix up")
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Unfixable("the payload is not JSON, so it cannot be fixed up")
    try:
        if isinstance(decoded, dict):
            fixed = fixup(decoded)
            return Unfixable("the fix-up left this event out") if fixed is None else _encoded(fixed)
        if isinstance(decoded, list):
            elements = [fixup(e) if isinstance(e, dict) else e for e in decoded]
            return _encoded([element for element in elements if element is not None])
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
        return Unfixable(f"the patch does not apply: {error}")
    except Exception as error:  # an operator's callable: any failure is this record's
        return Unfixable(f"the fix-up raised {type(error).__name__}: {error}")
    return Unfixable("the payload is neither an event object nor a batch")


def _encoded(value: object) -> Fixed | Unfixable:
    try:
        return Fixed(orjson.dumps(value))
    except TypeError as error:
        return Unfixable(f"the fix-up returned something that is not JSON: {error}")


# -- judging ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a payload would pass the worker's validation now, and if not, why."""

    passes: bool
    problems: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "passes" if self.passes else "; ".join(self.problems)


def judge(value: bytes | None, now_ms: int, stages: Iterable[str]) -> Verdict:
    """The worker's own decision (``consumers.decode.decode_message``) on ``value`` now."""
    decoded = decode_message(value, now_ms=now_ms, stages=frozenset(stages))
    problems = tuple(
        ("" if item.batch_index is None else f"[{item.batch_index}] ")
        + f"{item.rejection.reason.value}: {item.rejection.detail}"
        for item in decoded
        if isinstance(item, RejectedPayload)
    )
    return Verdict(not problems, problems)


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """What replay does with one record: send ``value``, or skip it for ``why``."""

    record: DeadLetterRecord
    value: bytes | None
    verdict: Verdict | None  # None: not judged (the fix-up failed)
    send: bool
    why: str = ""

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        return {
            "dlq_partition": self.record.partition,
            "dlq_offset": self.record.offset,
            "reason": self.record.reason,
            "event_id": self.record.event_id,
            "passes": None if self.verdict is None else self.verdict.passes,
            "problems": [self.why] if self.verdict is None else list(self.verdict.problems),
            "action": ("would send" if dry_run else "sent") if self.send else "skipped",
            "value": utf8_or_none(self.value),
        }


TRUNCATED = (
    "an envelope holding only the original's first 64 KiB (voicemon-truncated): replay the "
    "original from the events topic at its source partition and offset"
)


def plan_step(
    record: DeadLetterRecord,
    fixup: Fixup | None,
    now_ms: int,
    stages: Iterable[str],
    send_invalid: bool = False,
) -> ReplayStep:
    """Fix the record up, judge the result, and decide: a payload the worker would reject
    again is skipped unless ``send_invalid``; an envelope (a truncated letter) always is."""
    if record.truncated:
        return ReplayStep(record, None, None, False, TRUNCATED)
    fixed = fix_up(record.value, fixup)
    if isinstance(fixed, Unfixable):
        return ReplayStep(record, None, None, False, fixed.problem)
    verdict = judge(fixed.value, now_ms, stages)
    send = verdict.passes or send_invalid
    why = "" if send else "the worker would reject it again"
    return ReplayStep(record, fixed.value, verdict, send, why)


def replay_headers(record: DeadLetterRecord) -> list[tuple[str, bytes]]:
    return [(REPLAY_HEADER, f"{record.partition}:{record.offset}".encode())]
