"""``voicemon dlq-count`` and ``voicemon dlq tail|inspect|replay``: see why events were
rejected, how many for each reason, and send fixed ones back to the input topic."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
from rich.table import Table

from runtime.cli import tables
from runtime.cli.common import AsJson, console, fail, print_json, settings
from runtime.cli.dlq_fixups import Fixup, ReplayStep, load_callable, load_patch, plan_step
from runtime.cli.dlq_kafka import DlqKafkaError, DlqReader, Watermarks, publish_replay
from runtime.cli.dlq_records import (
    DeadLetterRecord,
    DlqToolError,
    ReasonCount,
    Selection,
    count_by_reason,
    latest,
    read_span,
    rfc3339,
    selection,
    tail_line,
)
from runtime.cli.preflight import check_kafka
from voicemon.kafka_client import confluent_security
from voicemon.topics import message_count

DEFAULT_TAIL = 20

dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter topic: tail, inspect, replay.")

Reasons = Annotated[
    list[str] | None, typer.Option("--reason", help="Only this reason code (repeatable).")
]
Since = Annotated[
    str | None,
    typer.Option(help="From this time: 15m, 2h or 7d back, RFC 3339, or epoch ms."),
]
Until = Annotated[str | None, typer.Option(help="Up to this time (inclusive); as --since.")]


def dlq_count(as_json: AsJson = False) -> None:
    """Messages in the DLQ topic."""
    config = settings()
    check_kafka(config)
    count = message_count(config.kafka_bootstrap, config.dlq_topic, confluent_security(config))
    print(orjson.dumps({"dlq_messages": count}).decode() if as_json else f"DLQ messages: {count:,}")


@dlq_app.command("tail")
def dlq_tail(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
    reason: Reasons = None,
    since: Since = None,
    from_beginning: Annotated[bool, typer.Option(help="From the oldest one kept.")] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"At most the newest N (default {DEFAULT_TAIL} unless "
            "--from-beginning or --since).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Dead letters with their reason, detail, source partition/offset, batch index and
    event_id, oldest first; ``--follow`` waits for new ones until Ctrl-C."""
    chosen = _selection(reason, since, None, None)
    if limit is None and not (from_beginning or since):
        limit = DEFAULT_TAIL
    try:
        with _reader() as reader:
            marks = _marks(reader)
            since_offsets = _since_offsets(reader, chosen, marks)
            newest_only = not (from_beginning or since or chosen.reasons)
            starts, ends = read_span(marks, chosen, since_offsets, limit if newest_only else None)
            backlog = _matching(_read(reader, starts, ends), chosen)
            for record in latest(backlog, limit) if limit else backlog:
                _show(record, as_json)
            if follow:
                for record in _matching(_read(reader, ends, None), chosen):
                    _show(record, as_json)
    except KeyboardInterrupt:
        return


@dlq_app.command("inspect")
def dlq_inspect(since: Since = None, until: Until = None, as_json: AsJson = False) -> None:
    """Dead letters counted by reason over a time range (all that the topic keeps by default)."""
    chosen = _selection(None, since, until, None)
    with _reader() as reader:
        marks = _marks(reader)
        starts, ends = read_span(marks, chosen, _since_offsets(reader, chosen, marks))
        counts = count_by_reason(_matching(_read(reader, starts, ends), chosen))
    total = sum(count.messages for count in counts)
    if as_json:
        print_json({"topic": settings().dlq_topic, "since": _at(chosen.since_ms),
                    "until": _at(chosen.until_ms), "messages": total,
                    "reasons": [count.to_json() for count in counts]})  # fmt: skip
        return
    console.print(inspect_table(counts))
    since_text, until_text = _at(chosen.since_ms) or "the oldest kept", _at(chosen.until_ms)
    span = f"since {since_text} until {until_text or 'now'}"
    console.print(f"{total:,} dead letter(s) in {settings().dlq_topic}, {span}", highlight=False)


@dlq_app.command("replay")
def dlq_replay(
    reason: Reasons = None,
    since: Since = None,
    until: Until = None,
    offset: Annotated[
        list[str] | None,
        typer.Option(
            help="DLQ PARTITION:OFFSET or PARTITION:FIRST-LAST, as tail shows them (repeatable)."
        ),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead letter kept.")] = False,
    patch: Annotated[
        Path | None, typer.Option(help="An RFC 6902 JSON patch applied to each event.")
    ] = None,
    fixup: Annotated[
        str | None,
        typer.Option(
            help="MODULE:FUNCTION or FILE.py:FUNCTION taking and returning the event "
            "dict (None leaves it out)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Send nothing; say what would pass validation now.")
    ] = False,
    send_invalid: Annotated[
        bool, typer.Option(help="Also send what the worker would reject again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Re-publish selected dead letters to the input topic, optionally fixed up first. Safe to
    repeat: the worker counts each event_id once."""
    chosen = _selection(reason, since, until, offset)
    if chosen.empty and not every:
        fail("say which dead letters to replay: --reason, --since/--until, --offset or --all")
    fix = _fixup(patch, fixup)
    config = settings()
    now_ms = int(time.time() * 1000)
    with _reader() as reader:
        marks = _marks(reader)
        starts, ends = read_span(marks, chosen, _since_offsets(reader, chosen, marks))
        records = _matching(_read(reader, starts, ends), chosen)
        steps = [plan_step(r, fix, now_ms, config.stages, send_invalid) for r in records]
    sent = 0
    if not dry_run:
        try:
            sent = publish_replay(config, config.events_topic, steps)
        except DlqKafkaError as error:
            fail(str(error))
    for step in steps:
        if as_json:
            print(orjson.dumps(step.to_json(dry_run)).decode())
        else:
            console.print(step_line(step, dry_run), markup=False, highlight=False, soft_wrap=True)
    if not as_json:
        console.print(replay_summary(steps, sent, dry_run, config.events_topic), highlight=False)


def inspect_table(counts: list[ReasonCount]) -> Table:
    """Counts by reason, with the newest detail of each (fits 80 columns)."""
    result = tables.table("dead letters by reason",
                          ("reason", "messages", "last_seen", "latest_detail"),
                          numbers=("messages",))  # fmt: skip
    for count in counts:
        last = None if count.last_ms is None else datetime.fromtimestamp(count.last_ms / 1000, UTC)
        result.add_row(count.reason, tables.cell(count.messages), tables.cell(last),
                       count.latest_detail)  # fmt: skip
    return result


def step_line(step: ReplayStep, dry_run: bool) -> str:
    record = step.record
    event = f" event_id={record.event_id}" if record.event_id is not None else ""
    head = f"dlq={record.partition}:{record.offset} {record.reason}{event}:"
    if step.verdict is None:
        return f"{head} skipped, {step.why}"
    if step.send:
        action = "would send" if dry_run else "sent"
        return f"{head} {action} ({step.verdict})"
    return f"{head} skipped, {step.why} ({step.verdict})"


def replay_summary(steps: list[ReplayStep], sent: int, dry_run: bool, topic: str) -> str:
    chosen = sum(step.send for step in steps)
    unfixable = sum(step.verdict is None for step in steps)
    rejected = len(steps) - chosen - unfixable
    skipped = f"{rejected} would be rejected again, {unfixable} could not be fixed up"
    if dry_run:
        return f"dry run: {len(steps)} selected; {chosen} would be sent to {topic}; {skipped}"
    return f"{len(steps)} selected; sent {sent} to {topic}; skipped: {skipped}"


# -- helpers ------------------------------------------------------------------------------


def _selection(
    reasons: list[str] | None, since: str | None, until: str | None, offsets: list[str] | None
) -> Selection:
    try:
        return selection(reasons or [], since, until, offsets or [], int(time.time() * 1000))
    except DlqToolError as error:
        fail(str(error))


def _fixup(patch: Path | None, fixup: str | None) -> Fixup | None:
    if patch is not None and fixup is not None:
        fail("give either --patch or --fixup, not both")
    try:
        if patch is not None:
            return load_patch(patch)
        return None if fixup is None else load_callable(fixup)
    except DlqToolError as error:
        fail(str(error))


def _reader() -> DlqReader:
    check_kafka(settings())  # a refused login or a stopped broker: one sentence, at once
    return DlqReader(settings(), settings().dlq_topic)


def _marks(reader: DlqReader) -> Watermarks:
    try:
        return reader.watermarks()
    except DlqKafkaError as error:
        _kafka_failed(error)


def _since_offsets(
    reader: DlqReader, chosen: Selection, marks: Watermarks
) -> dict[int, int] | None:
    if chosen.since_ms is None:
        return None
    try:
        return reader.offsets_at(chosen.since_ms, marks)
    except DlqKafkaError as error:
        _kafka_failed(error)


def _read(
    reader: DlqReader, starts: dict[int, int], ends: dict[int, int] | None
) -> Iterator[DeadLetterRecord]:
    try:
        yield from reader.read(starts, ends)
    except DlqKafkaError as error:
        _kafka_failed(error)


def _matching(records: Iterable[DeadLetterRecord], chosen: Selection) -> Iterator[DeadLetterRecord]:
    return (record for record in records if chosen.matches(record))


def _show(record: DeadLetterRecord, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(record.to_json()).decode(), flush=True)
    else:
        console.print(tail_line(record), markup=False, highlight=False, soft_wrap=True)


def _at(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(ms)


def _kafka_failed(error: DlqKafkaError) -> NoReturn:
    fail(str(error))


def register(app: typer.Typer) -> None:
    app.command("dlq-count")(dlq_count)
    dlq_app.command("count")(dlq_count)
    app.add_typer(dlq_app, name="dlq")
