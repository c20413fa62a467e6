"""``voicemon demo``: the main job on the embedded stack, with a live progress line and books
that balance — published = counted + duplicates + rejected.

The worker runs as a subprocess; its /metrics feed the progress line (counted, duplicates,
DLQ). Once it has judged everything published (or a timeout passed) it is stopped, and the
books are read from the system itself: raw rows of this run's artifacts in ClickHouse and
the messages the DLQ topic gained; the duplicates are those the generator injected.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtime.cli import tables
from runtime.cli.common import Home, console, fail, open_store, settings
from runtime.cli.dlq_kafka import DlqKafkaError, DlqReader
from runtime.cli.metrics import metrics_realtime
from voicemon.devtools.loadgen import LoadMix, Published
from voicemon.devtools.loadgen import produce as produce_load
from voicemon.devtools.localstack import LocalStack, StackError
from voicemon.devtools.reconcile import Reconciliation, WorkerCounts, worker_counts
from voicemon.producer import EventProducer

POLL_S = 0.5
PROGRESS_LINE = ("{task.fields[phase]:<11} published {task.fields[published]:,} → counted "
                 "{task.fields[counted]:,} + dup {task.fields[duplicates]:,} + DLQ "
                 "{task.fields[rejected]:,}")  # fmt: skip


def demo(
    seconds: Annotated[float, typer.Option(help="Seconds of traffic.")] = 60,
    rate: Annotated[float, typer.Option(help="Events per second.")] = 2000,
    home: Home = Path("var"),
    catch_up: Annotated[
        float, typer.Option(help="Seconds to wait for the worker to judge everything.")
    ] = 120,
) -> None:
    """Start the stack, run a worker and the load generator, then reconcile the books."""
    stack = LocalStack(settings(), home)
    try:
        started = stack.up()
    except StackError as error:
        fail(str(error))
    try:
        books = _demo(home, seconds, rate, catch_up)
    finally:
        for name in started:  # what was running before is left running
            stack.stop(name)
    console.print(reconciliation_table(books))
    console.print(books.verdict(), style="green" if books.holds else "red", highlight=False)
    if not books.holds:
        raise typer.Exit(1)


def _demo(home: Path, seconds: float, rate: float, catch_up_s: float) -> Reconciliation:
    seed = int(time.time())  # this run's artifacts are art-<seed>-<n>
    dlq_before = _dlq_end()
    port = _free_port()
    worker = _start_worker(home, port)
    try:
        sent, seen, caught_up = _run(worker, home, port, seed, seconds, rate, catch_up_s)
        metrics_realtime(org=None, as_json=False, watch=False, every=None)
    finally:
        _stop(worker)
    rejected = _dlq_end() - dlq_before
    return Reconciliation(sent, _raw_rows(seed), rejected, seen, caught_up, catch_up_s)


def reconciliation_table(books: Reconciliation) -> Table:
    result = tables.table(
        "reconciliation: published = counted + duplicates + rejected",
        ("line", "count", "from"),
        numbers=("count",),
    )
    for line, count, source in books.rows():
        result.add_row(line, tables.cell(count), source)
    return result


def _run(
    worker: subprocess.Popen[bytes], home: Path, port: int, seed: int, seconds: float, rate: float,
    catch_up_s: float,
) -> tuple[Published, WorkerCounts | None, bool]:  # fmt: skip
    """Publish, then wait for the worker to judge everything, with the progress line."""
    config = settings()
    # The books must balance: wait for room rather than drop (docs/producer.md).
    producer = EventProducer.from_settings(config, overflow="block", block_timeout_s=120)
    mix = LoadMix(seed, 20, config.stages, duplicate_share=0.01, malformed_share=0.001)
    columns = (TextColumn(PROGRESS_LINE), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("demo", phase="publishing", published=0, counted=0,
                                 duplicates=0, rejected=0)  # fmt: skip
        watcher = _Watcher(port, _on_seen(progress, task))
        watcher.start()
        try:
            with producer:  # flushed and closed before the stack may stop
                sent = produce_load(producer, mix, rate, seconds, _on_published(progress, task))
            progress.update(task, phase="catching up")
            caught_up = _wait_judged(worker, home, watcher, sent.total, catch_up_s)
            progress.update(task, phase="caught up" if caught_up else "timed out")
        finally:
            watcher.stop()
    return sent, watcher.seen, caught_up


def _on_published(progress: Progress, task: TaskID) -> Callable[[float, Published], None]:
    return lambda elapsed, sent: progress.update(task, published=sent.total)


def _on_seen(progress: Progress, task: TaskID) -> Callable[[WorkerCounts], None]:
    def show(seen: WorkerCounts) -> None:
        progress.update(task, counted=seen.counted, duplicates=seen.duplicates,
                        rejected=seen.rejected)  # fmt: skip

    return show


def _wait_judged(
    worker: subprocess.Popen[bytes], home: Path, watcher: _Watcher, published: int,
    timeout_s: float,
) -> bool:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if watcher.seen is not None and watcher.seen.consumed >= published:
            return True
        if worker.poll() is not None:
            fail(f"the worker exited with code {worker.returncode}; see {_log(home)}")
        time.sleep(POLL_S)
    return False


class _Watcher(threading.Thread):
    """Reads the worker's /metrics every ``POLL_S`` seconds (nothing while it is starting)."""

    def __init__(self, port: int, on_seen: Callable[[WorkerCounts], None]) -> None:
        super().__init__(daemon=True)
        self._url = f"http://127.0.0.1:{port}/metrics"
        self._on_seen = on_seen
        self._stopped = threading.Event()
        self.seen: WorkerCounts | None = None

    def run(self) -> None:
        while not self._stopped.wait(POLL_S):
            try:
                with urllib.request.urlopen(self._url, timeout=2) as response:
                    self.seen = worker_counts(response.read().decode())
            except OSError:
                continue  # not listening yet
            self._on_seen(self.seen)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _start_worker(home: Path, port: int) -> subprocess.Popen[bytes]:
    log_path = _log(home)
    env = {**os.environ, "VOICEMON_WORKER_WEB_PORT": str(port)}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "runtime", "worker"], stdout=log, stderr=log, env=env
        )


def _log(home: Path) -> Path:
    return home / "log" / "worker.log"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dlq_end(wait_s: float = 30) -> int:
    """The DLQ topic's end offsets summed: what it gained between two reads. A broker just
    started may not lead the topic yet: asked again for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with DlqReader(settings(), settings().dlq_topic) as reader:
                return sum(high for _, high in reader.watermarks().values())
        except DlqKafkaError as error:
            if time.monotonic() > deadline:
                fail(str(error))
            time.sleep(1)


def _raw_rows(seed: int) -> int:
    """Raw rows of this run's artifacts (``art-<seed>-<n>``; the worker has let go of the store)."""
    result = open_store().query(
        "SELECT count() FROM voicemon.pipeline_events WHERE startsWith(artifact_id, {p:String})",
        parameters={"p": f"art-{seed}-"},
    )
    return int(result.result_rows[0][0])
