"""The bare-Faust ceiling: a Faust agent that only orjson-decodes each message value.

Run as a subprocess by ``tests.perf.ingest`` (``python -m tests.perf.faust_bare``), configured
by environment variables (``BENCH_*``). The app is set up like the voicemon worker's
(``consumers/app.py``: kafka:// transport, raw serializers, no leader topic,
``stream_wait_empty=False``) and, in mode ``take``, consumes the stream the way the worker
does (``noack_take`` with the same batch knobs, then ack every event); mode ``iter`` is a
plain ``async for value in stream``. So the figure is Faust's own per-message cost, with
none of voicemon's work.

Timing runs from the first message to the one that completes ``BENCH_EXPECT_EVENTS``
events; the result (JSON) is written to ``BENCH_RESULT`` and the parent then stops this
process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import faust
import orjson

BOOTSTRAP = os.environ.get("BENCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ.get("BENCH_TOPIC", "bench.events")
GROUP = os.environ.get("BENCH_GROUP", "bench-faust-bare")
EXPECT_EVENTS = int(os.environ.get("BENCH_EXPECT_EVENTS", "0"))
RESULT = Path(os.environ.get("BENCH_RESULT", "faust-bare-result.json"))
MODE = os.environ.get("BENCH_FAUST_MODE", "take")
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))
TAKE_MAX = int(os.environ.get("BENCH_TAKE_MAX", "2000"))
TAKE_WITHIN = float(os.environ.get("BENCH_TAKE_WITHIN", "1.0"))

app = faust.App(
    GROUP,
    broker=f"kafka://{BOOTSTRAP}",
    autodiscover=False,
    datadir=os.environ.get("BENCH_DATADIR", "./var/faust-bare"),
    topic_partitions=PARTITIONS,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    stream_wait_empty=False,
    web_enabled=False,
)

topic = app.topic(
    TOPIC,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=PARTITIONS,
)


class Tally:
    """Counts and the first/last times; writes the result once every event was seen."""

    def __init__(self) -> None:
        self.events = 0
        self.messages = 0
        self.first = 0.0
        self.first_cpu = 0.0
        self.written = False

    def add(self, value: bytes) -> None:
        if self.messages == 0:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
            RESULT.with_suffix(".started").touch()
        decoded = orjson.loads(value)
        self.events += len(decoded) if isinstance(decoded, list) else 1
        self.messages += 1
        if self.events >= EXPECT_EVENTS and not self.written:
            self.finish()

    def finish(self) -> None:
        seconds = time.perf_counter() - self.first
        result: dict[str, Any] = {
            "events": self.events,
            "messages": self.messages,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - self.first_cpu,
            "peak_rss_kb": _status_kb("VmHWM"),
            "mode": MODE,
        }
        partial = RESULT.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(result))
        partial.rename(RESULT)
        self.written = True


tally = Tally()


@app.agent(topic)
async def decode_only(stream: Any) -> None:
    if MODE == "iter":
        async for value in stream:
            tally.add(value)
        return
    async for events in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN):
        for event in events:
            tally.add(event.value)
        for event in events:
            event.ack()


def _status_kb(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


if __name__ == "__main__":
    from faust import Worker

    Worker(app, loglevel=os.environ.get("BENCH_LOGLEVEL", "warning")).execute_from_commandline()
