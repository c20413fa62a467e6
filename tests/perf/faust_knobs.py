"""The bare-Faust agent of ``tests/perf/faust_bare.py`` with Faust's knobs switchable, to
measure which of them cut Faust's own per-message cost (issue 10, single-event form).

    python -m tests.perf.faust_knobs --topic T --events N [--knobs JSON] [--repeat 3]
                                     [--profile DIR] [--label NAME]

Each run starts ``python -m tests.perf.faust_knobs agent`` (this module) as a subprocess in
a fresh consumer group, timed by the agent itself from its first message to the one that
completes ``--events``; the ``other`` column is the cores used meanwhile by everything that
is neither the agent, Kafka nor Redis (the machine is shared). ``--knobs`` is a JSON object:

- ``settings``: extra ``faust.App`` settings (``stream_buffer_maxsize``,
  ``broker_max_poll_records``, ``consumer_max_fetch_size``, ``stream_wait_empty``, ...);
- ``monitor``: ``keep`` (Faust's default) or ``remove`` (``app.sensors.remove(app.monitor)``
  once the app runs, so no sensor hook runs per message);
- ``mode``: ``take`` (``noack_take`` then ``event.ack()`` each, as the worker does),
  ``take_stream_ack`` (the same, acking through ``stream.ack``), ``iter`` (``async for``),
  ``noack_iter`` (``stream.noack()`` + ``events()``, acking every ``take_max``);
- ``loop``: ``aio`` or ``uvloop`` (``mode.loop.use``); ``loglevel``; ``take_max``,
  ``take_within``; ``topic_acks``: false for ``app.topic(..., acks=False)`` (Faust then
  tracks no acks and commits nothing for the topic).

``--profile DIR`` runs the agent under ``py-spy record`` (raw, all threads, on-CPU samples only)
and prints the top frames, own and cumulative, by thread.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


# -- the agent (runs in the subprocess) -----------------------------------------------------


def run_agent() -> None:  # pragma: no cover - a subprocess
    knobs: dict[str, Any] = orjson.loads(os.environ.get("BENCH_KNOBS", "{}"))
    if knobs.get("loop", "aio") != "aio":
        import mode.loop

        mode.loop.use(knobs["loop"])

    import faust

    bootstrap = os.environ["BENCH_KAFKA_BOOTSTRAP"]
    expect = int(os.environ["BENCH_EXPECT_EVENTS"])
    result_path = Path(os.environ["BENCH_RESULT"])
    partitions = int(os.environ.get("BENCH_PARTITIONS", "4"))
    take_max = int(knobs.get("take_max", 2000))
    take_within = float(knobs.get("take_within", 1.0))
    agent_mode = knobs.get("mode", "take")

    settings = {"stream_wait_empty": False} | knobs.get("settings", {})
    if knobs.get("monitor") == "lean":
        settings["Monitor"] = _lean_monitor()
    if knobs.get("scheduler") == "flat":
        settings["ConsumerScheduler"] = FlatScheduler
    app = faust.App(
        os.environ["BENCH_GROUP"],
        broker=f"kafka://{bootstrap}",
        autodiscover=False,
        datadir=os.environ["BENCH_DATADIR"],
        topic_partitions=partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        **settings,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                           "value_serializer": "raw"}  # fmt: skip
    acks = bool(knobs.get("topic_acks", True))  # False: no ack tracking, and no commits
    topic = app.topic(os.environ["BENCH_TOPIC"], partitions=partitions, acks=acks, **raw)
    state = {"messages": 0, "first": 0.0, "first_cpu": 0.0, "done": False}

    def add(value: bytes) -> None:
        if state["messages"] == 0:
            state["first"] = time.perf_counter()
            state["first_cpu"] = time.process_time()
            result_path.with_suffix(".started").touch()
        orjson.loads(value)
        state["messages"] += 1
        if state["messages"] >= expect and not state["done"]:
            state["done"] = True
            result = {
                "messages": state["messages"],
                "seconds": time.perf_counter() - state["first"],
                "cpu_seconds": time.process_time() - state["first_cpu"],
            }
            partial = result_path.with_suffix(".partial")
            partial.write_bytes(orjson.dumps(result))
            partial.rename(result_path)

    @app.agent(topic)
    async def decode_only(stream: Any) -> None:
        # The app adds its Monitor to the sensors when it starts (App.on_init_dependencies),
        # so it is removed here, once the app runs, not when it is built.
        if knobs.get("monitor", "keep") == "remove" and app.monitor in set(app.sensors):
            app.sensors.remove(app.monitor)
        print("sensors:", list(app.sensors), flush=True)
        if knobs.get("gc") == "freeze":
            gc.collect()
            gc.freeze()
        elif knobs.get("gc", "").startswith("threshold="):
            gc.freeze()
            gc.set_threshold(int(knobs["gc"].split("=")[1]))
        if knobs.get("experimental_direct_callback"):
            _await_callback_directly(app.consumer)
        if agent_mode == "iter":
            async for value in stream:
                add(value)
        elif agent_mode == "noack_iter":
            pending = []
            async for event in stream.noack().events():
                add(event.value)
                pending.append(event)
                if len(pending) >= take_max:
                    for done in pending:
                        done.ack()
                    pending.clear()
        elif agent_mode == "take_stream_ack":
            async for events in stream.noack_take(take_max, within=take_within):
                for event in events:
                    add(event.value)
                for event in events:
                    await stream.ack(event)
        else:
            async for events in stream.noack_take(take_max, within=take_within):
                for event in events:
                    add(event.value)
                for event in events:
                    event.ack()

    from faust import Worker

    Worker(app, loglevel=knobs.get("loglevel", "warning")).execute_from_commandline()


class FlatScheduler:
    """A ``ConsumerScheduler`` that hands records over partition by partition (no
    round-robin between topics: this benchmark has one topic)."""

    def iterate(self, records: Any) -> Any:
        for tp, messages in records.items():
            for message in messages:
                yield tp, message


def _lean_monitor() -> Any:
    """A ``Monitor`` (the ``Monitor`` setting) that keeps only ``stream_inbound_time`` per
    event (Faust's livelock detector reads it) and skips the rest of the per-message
    bookkeeping."""
    from time import monotonic

    from faust.sensors import Monitor

    class LeanMonitor(Monitor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            pass

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            self.stream_inbound_time[tp] = monotonic()

        def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                                state: Any = None) -> None:  # fmt: skip
            pass

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            pass

    return LeanMonitor


def _await_callback_directly(consumer: Any) -> None:  # pragma: no cover - experiment
    """NOT Faust's public API, a measurement only: replace the per-message
    ``Service.wait_first(callback(message), suspend_flow.wait())`` of
    ``Consumer._drain_messages`` (four tasks and an ``asyncio.wait`` per message) by a plain
    ``await callback(message)``, to show what that hand-off costs."""
    from mode.services import WaitResults

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        first, *rest = coros
        for other in rest:
            if hasattr(other, "close"):
                other.close()
        return WaitResults([first], [await first], False)

    consumer.wait_first = wait_first


# -- the driver -----------------------------------------------------------------------------


def measure(
    args: argparse.Namespace, knobs: dict[str, Any], workdir: Path, spy_to: Path | None
) -> dict[str, Any]:
    from tests.perf.ingest import CpuSnapshot, stack_pids

    run = f"knobs-{uuid.uuid4().hex[:6]}"
    result_file = workdir / f"{run}.json"
    env = {
        **os.environ,
        "BENCH_KAFKA_BOOTSTRAP": args.bootstrap,
        "BENCH_TOPIC": args.topic,
        "BENCH_GROUP": f"bench-knobs-{uuid.uuid4().hex[:8]}",
        "BENCH_EXPECT_EVENTS": str(args.events),
        "BENCH_RESULT": str(result_file),
        "BENCH_PARTITIONS": str(args.partitions),
        "BENCH_DATADIR": str(workdir / run),
        "BENCH_KNOBS": orjson.dumps(knobs).decode(),
    }
    log_path = workdir / f"{run}.log"
    stack = stack_pids()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.perf.faust_knobs", "agent"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    spy = None
    before = None
    try:
        deadline = time.monotonic() + args.timeout
        while not result_file.exists():
            if before is None and result_file.with_suffix(".started").exists():
                before = time.perf_counter(), CpuSnapshot.take(process.pid, *stack)
                if spy_to is not None:  # profile the measured window only, not start-up
                    command = ["py-spy", "record", "--pid", str(process.pid), "--rate", "200"]
                    command += ["--format", "raw", "--threads", "--function", "--nonblocking"]
                    command += ["-o", str(spy_to)]
                    quiet = subprocess.DEVNULL
                    spy = subprocess.Popen(command, stdout=quiet, stderr=quiet)
            if process.poll() is not None:
                raise SystemExit(
                    f"agent exited {process.returncode}: {log_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"agent not done in {args.timeout}s: {log_path.read_text()[-2000:]}"
                )
            time.sleep(0.02)
        cores: dict[str, float] = {}
        if before is not None:
            seconds = time.perf_counter() - before[0]
            cores = CpuSnapshot.take(process.pid, *stack).cores_since(before[1], seconds)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    data = orjson.loads(result_file.read_bytes())
    data["msgs_per_s"] = data["messages"] / data["seconds"]
    data["us_cpu_per_msg"] = 1e6 * data["cpu_seconds"] / data["messages"]
    data["cores"] = cores
    return data


def summarize(raw: Path, top: int = 25) -> str:
    """Top frames of a py-spy raw (collapsed) profile: self and inclusive %, by thread."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            total[frame] += count
    lines = [f"{samples} samples"]
    lines += [f"  thread {100 * n / samples:5.1f}%  {name}" for name, n in threads.most_common()]
    lines.append("self:")
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.faust_knobs")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--bootstrap", default=os.environ.get("VOICEMON_KAFKA_BOOTSTRAP", ""))
    parser.add_argument("--knobs", default="{}")
    parser.add_argument("--label", default="")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    knobs = orjson.loads(args.knobs)
    workdir = Path(tempfile.mkdtemp(prefix="faust-knobs-"))
    try:
        for index in range(args.repeat):
            spy_to = None
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                spy_to = args.profile / f"{args.label or 'run'}-{index}.pyspy.txt"
            data = measure(args, knobs, workdir, spy_to)
            cores = data["cores"]
            print(
                f"{args.label:<28} {data['msgs_per_s']:>8,.0f} msg/s"
                f" {data['us_cpu_per_msg']:6.1f} us-cpu/msg"
                f" agent {cores.get('worker', 0):.2f} kafka {cores.get('kafka', 0):.2f}"
                f" other {cores.get('other', 0):.2f}  {args.knobs}",
                flush=True,
            )
            if spy_to is not None and spy_to.exists():
                print(summarize(spy_to))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["agent"]:
        del sys.argv[1]
        run_agent()
    else:
        raise SystemExit(main())
