"""A fresh virtual environment on each supported CPython installs only the voicemon-producer
distribution — its lock, hash-checked, then the wheel built from producer/ — and publishes to
the real broker, without the voicemon package or any of the worker's dependencies.

Wheels come from var/wheelhouse/py3.X, filled from the package index by the first run that
has network access (a run inside a network namespace finds them there)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_producer import new_topic, read_events
from voicemon.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("3.11", "3.12", "3.13")

PUBLISH = """
import importlib.util, sys
from voicemon_producer import EventProducer

assert importlib.util.find_spec("voicemon") is None, "the voicemon package is installed"
for heavy in ("faust", "redis", "chdb", "clickhouse_connect", "pydantic_settings"):
    assert importlib.util.find_spec(heavy) is None, heavy
bootstrap, topic = sys.argv[1:]
trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
with EventProducer(bootstrap, topic) as producer:
    events = [producer.events.artifact_received(f"art-{n}") for n in range(25)]
    futures = [producer.publish(event, headers=trace) for event in events]
    delivered = [future.result(timeout=30) for future in futures]
print(sys.version_info[:2], len(delivered), producer.stats())
"""


def interpreter(version: str) -> str | None:
    """A CPython ``version`` that runs: pyenv's, or python3.X on PATH (a pyenv shim for a
    version that is not selected does not run)."""
    pyenv = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    for candidate in [*reversed(pyenv), shutil.which(f"python{version}")]:
        if candidate and run(candidate, "-c", "import venv").returncode == 0:
            return candidate
    return None


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=300, check=False, env=env, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def producer_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--wheel-dir", out, ROOT / "producer")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return next(out.glob("voicemon_producer-*.whl"))


@pytest.mark.parametrize("version", VERSIONS)
def test_a_fresh_environment_installs_only_the_producer_and_publishes(
    version: str, stack: Settings, producer_wheel: Path, tmp_path: Path
) -> None:
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine: its lock is not checked here")
    lock = ROOT / "requirements" / f"producer-py{version}.lock"
    wheelhouse = ROOT / "var" / "wheelhouse" / f"py{version}"
    venv = tmp_path / "venv"
    made = run(python, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    pip = (venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check")
    offline = (*pip, "install", "--no-index", "--find-links", wheelhouse, "--require-hashes",
               "-r", lock)  # fmt: skip
    if run(*offline).returncode != 0:  # the first run: fetch the locked wheels
        fetched = run(*pip, "download", "--require-hashes", "--only-binary", ":all:",
                      "-d", wheelhouse, "-r", lock)  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr[-2000:]
        installed = run(*offline)
        assert installed.returncode == 0, installed.stderr[-2000:]
    wheel = run(*pip, "install", "--no-index", "--no-deps", producer_wheel)
    assert wheel.returncode == 0, wheel.stderr
    listed = run(*pip, "list", "--format=freeze").stdout
    names = {line.split("==")[0].lower() for line in listed.split()}
    assert "voicemon" not in names and "voicemon-producer" in names
    topic = new_topic(stack.kafka_bootstrap)
    published = run(venv / "bin" / "python", "-c", PUBLISH, stack.kafka_bootstrap, topic,
                    cwd=tmp_path)  # fmt: skip
    assert published.returncode == 0, published.stderr[-3000:]
    major, minor = version.split(".")
    assert published.stdout.startswith(f"({major}, {minor}) 25 ProducerStats(queued=0")
    assert len(read_events(stack.kafka_bootstrap, topic)) == 25
