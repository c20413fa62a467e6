"""The Quix Streams peer's own virtual environment, created once and reused.

Quix Streams pins confluent-kafka below 2.13, so the peer (``tests/perf/peer/quix_ingest.py``)
cannot share voicemon's environment. ``ensure_peer_venv`` makes one with ``python -m venv``
and pip, and writes a marker file holding the requirement line; a venv whose marker matches
is reused as it is, any other is cleared and built again. The first build downloads about
600 MB (chDB's wheel is most of it); pip's output is shown as it goes.
"""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path

PEER_REQUIREMENTS = ("quixstreams>=3.28,<4", "clickhouse-connect[chdb]", "redis")
PEER_SCRIPT = Path(__file__).resolve().parent / "peer" / "quix_ingest.py"
MARKER_NAME = "voicemon-peer-requirements.txt"


class PeerVenvError(Exception):
    """The peer's virtual environment could not be made; the message says what to do."""


def requirement_line() -> str:
    """What the marker holds: the interpreter's version and the requirements, on one line."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return " ".join((version, *PEER_REQUIREMENTS))


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def is_ready(venv: Path) -> bool:
    marker = venv / MARKER_NAME
    return (
        venv_python(venv).exists()
        and marker.exists()
        and marker.read_text().strip() == requirement_line()
    )


def ensure_peer_venv(venv: Path) -> Path:
    """The venv's python, after creating the venv if its marker does not match."""
    if is_ready(venv):
        return venv_python(venv)
    say(f"peer: creating the Quix Streams environment in {venv} (once; ~600 MB to download)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run_step(
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        f"could not create a virtual environment in {venv}; check that Python's venv module "
        "(and ensurepip) is installed",
    )
    say(f"peer: installing {' '.join(PEER_REQUIREMENTS)}")
    pip = [str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check"]
    _run_step(
        [*pip, "install", "--progress-bar", "off", *PEER_REQUIREMENTS],
        f"pip could not install the Quix peer's packages into {venv}; check that the package "
        "index is reachable (pip's own error is above), then run the benchmark again",
    )
    _run_step(
        [
            str(venv_python(venv)),
            "-W",
            "ignore",
            "-c",
            "import quixstreams, clickhouse_connect, chdb, redis",
        ],
        f"the Quix peer's packages installed into {venv} do not import; delete that folder "
        "and run the benchmark again",
    )
    (venv / MARKER_NAME).write_text(requirement_line() + "\n")
    say("peer: environment ready")
    return venv_python(venv)


def _run_step(command: list[str], failure: str) -> None:
    """Run ``command``, its output shown on stderr as it comes; ``failure`` if it fails."""
    tail: deque[str] = deque(maxlen=3)
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except OSError as error:
        raise PeerVenvError(f"{failure} ({error})") from error
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            say(f"    {line}")
    if process.wait() != 0:
        last = tail[-1] if tail else f"exit status {process.returncode}"
        raise PeerVenvError(f"{failure} (last output: {last})")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
