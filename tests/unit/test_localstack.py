"""The local stack waits for the topics ``voicemon topics ensure`` accepts: at least the
configured partitions (more is fine), every one led."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from voicemon.devtools import localstack
from voicemon.devtools.localstack import _stop, all_led


def metadata(count: int, leader: int = 1) -> SimpleNamespace:
    return SimpleNamespace(partitions={p: SimpleNamespace(leader=leader) for p in range(count)})


@pytest.mark.parametrize(("found", "ready"), [(3, False), (4, True), (5, True), (64, True)])
def test_partitions_at_least_the_configured_count(found: int, ready: bool) -> None:
    assert (
        all_led({"events": metadata(found), "dlq": metadata(4)}, {"events": 4, "dlq": 4}) is ready
    )


def test_a_missing_topic_or_a_partition_without_leader_is_not_ready() -> None:
    assert not all_led({"events": metadata(4)}, {"events": 4, "dlq": 4})
    assert not all_led({"events": metadata(4, leader=-1)}, {"events": 4})


# -- stopping what a pid file names (found by a break-it review) ------------------------------


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except FileNotFoundError:
        return None


def _broker(ignore_sigterm: bool) -> subprocess.Popen[bytes]:
    """A child standing in for a broker ``up`` started (registered as it registers one)."""
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
    localstack._STARTED[child.pid] = child
    return child


@pytest.mark.parametrize("ignore_sigterm", [False, True])
def test_a_broker_started_here_is_stopped_and_reaped(tmp_path: Path, ignore_sigterm: bool) -> None:
    """Ended by SIGTERM at once, or by SIGKILL after the timeout: reaped either way (an
    unreaped child is a zombie, which a check by signal 0 would wait on to the timeout)."""
    broker = _broker(ignore_sigterm)
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text(str(broker.pid))
    started = time.monotonic()
    assert _stop(pid_file, timeout_s=1)
    assert time.monotonic() - started < (3 if ignore_sigterm else 1)
    assert _state(broker.pid) is None
    assert broker.returncode == (-signal.SIGKILL if ignore_sigterm else -signal.SIGTERM)


def test_another_child_named_by_a_stale_pid_file_keeps_its_exit_status(tmp_path: Path) -> None:
    worker = subprocess.Popen(["sleep", "60"])  # not a broker started here
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text(str(worker.pid))
    _stop(pid_file, timeout_s=1)
    assert worker.wait() == -signal.SIGTERM


@pytest.mark.parametrize("text", ["", "0", "1", "-5", "abc"])
def test_a_pid_file_naming_no_process_of_its_own_stops_nothing(tmp_path: Path, text: str) -> None:
    """0 would signal the caller's whole process group, 1 the init process."""
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text(text)
    assert _stop(pid_file, timeout_s=1) is False
    assert not pid_file.exists()


def test_a_cluster_id_never_reads_as_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x08" + bytes(15))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert localstack.cluster_id() == "CAAAAAAAAAAAAAAAAAAAAA"  # "-AAA…" was drawn first
