"""The install: extras per role, the committed locks, and what a producer or API process loads.

A producer-only install (the base package) and an API-only install carry neither Faust nor
chDB; the worker keeps the five packages of the design card; every lock pins exactly one
version of each package, hashed, the same version in every lock, and satisfies pyproject.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
HEAVY = {"faust-streaming", "chdb"}  # Faust (the worker) and the embedded engine (~560 MB)
DESIGN_CARD = {"confluent-kafka", "faust-streaming", "redis", "clickhouse-connect",
               "prometheus-client"}  # fmt: skip
LOCKS = {  # lock -> the extras it installs
    "producer": (),
    "api": ("api",),
    "worker": ("worker",),
    "embedded": ("worker", "embedded"),
}


def requirements(*extras: str) -> list[Requirement]:
    """The requirements of the base package with ``extras``, self-references expanded."""
    found = [Requirement(line) for line in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == "voicemon":
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def names(found: list[Requirement]) -> set[str]:
    """Package names, with an extra that pulls a package in counted as that package."""
    out = {canonicalize_name(r.name) for r in found}
    embedded = any(canonicalize_name(r.name) == "clickhouse-connect" and "chdb" in r.extras
                   for r in found)  # fmt: skip
    return out | ({"chdb"} if embedded else set())


@cache
def lock(name: str) -> dict[str, str]:
    """The pins of requirements/<name>.lock: package -> version (every one hashed)."""
    text = (REPO / "requirements" / f"{name}.lock").read_text()
    pins = {}
    for block in re.split(r"\n(?=\S)", text):
        found = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if found:
            assert "--hash=sha256:" in block, f"{name}.lock: {found[1]} has no hash"
            pins[canonicalize_name(found[1])] = found[2]
    return pins


def test_the_base_install_is_the_producer_helper_and_the_event_schema() -> None:
    base = names(requirements())
    assert base == {"confluent-kafka", "orjson", "msgspec", "pydantic", "pydantic-settings"}
    assert not base & HEAVY


@pytest.mark.parametrize("extras", [(), ("cli",), ("api",)])
def test_producer_cli_and_api_installs_carry_neither_faust_nor_chdb(extras: tuple[str]) -> None:
    assert not names(requirements(*extras)) & HEAVY


def test_the_worker_keeps_the_design_card_and_only_the_embedded_extra_brings_chdb() -> None:
    worker = names(requirements("worker"))
    assert worker >= DESIGN_CARD
    assert "chdb" not in worker
    assert "chdb" in names(requirements("worker", "embedded"))
    assert names(requirements("dev")) >= names(requirements("worker", "embedded"))


@pytest.mark.parametrize("role", [*LOCKS, "dev"])
def test_each_lock_pins_what_its_extras_need_at_the_versions_of_dev_lock(role: str) -> None:
    extras = LOCKS.get(role, tuple(PROJECT["optional-dependencies"]))
    pins = lock(role)
    for requirement in requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{role}.lock lacks {name}: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{role}.lock pins {name}=={pins[name]}, outside {requirement}: run make lock"
        )
    assert {name: lock("dev").get(name) for name in pins} == pins
    assert "voicemon" not in pins


def test_role_locks_carry_only_their_role() -> None:
    assert not set(lock("producer")) & (HEAVY | {"clickhouse-connect", "redis", "fastapi"})
    assert not set(lock("api")) & HEAVY
    assert "chdb" not in lock("worker") and "faust-streaming" in lock("worker")
    assert {"chdb", "faust-streaming"} <= set(lock("embedded"))
    assert set(lock("build")) == {"setuptools"}


def test_locks_name_no_machine_path_and_say_how_to_regenerate() -> None:
    for path in (REPO / "requirements").glob("*.lock"):
        text = path.read_text()
        assert "#    make lock\n" in text, path.name
        assert "file://" not in text and "/tmp/" not in text, path.name


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys\nimport {imports}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
        check=True,
    )  # fmt: skip
    return {module.split(".")[0] for module in done.stdout.split()}


def test_importing_the_producer_loads_neither_faust_nor_chdb() -> None:
    loaded = _loaded_after("voicemon.producer, voicemon.event, voicemon.settings")
    assert "confluent_kafka" in loaded
    assert not loaded & {"faust", "chdb", "clickhouse_connect", "redis", "aiokafka", "fastapi"}


def test_importing_the_api_and_the_cli_loads_neither_faust_nor_chdb() -> None:
    loaded = _loaded_after("aggregators.api, aggregators.serve, runtime.cli")
    assert {"fastapi", "uvicorn", "clickhouse_connect"} <= loaded
    assert not loaded & {"faust", "mode", "chdb", "aiokafka"}


def test_install_and_ci_use_the_project_environment_and_the_lock() -> None:
    install = (REPO / "deploy/local/install.sh").read_text()
    assert "-m venv .venv" in install
    assert "install -q --require-hashes -r requirements/dev.lock" in install
    assert "--no-deps --no-build-isolation -e ." in install
    makefile = (REPO / "Makefile").read_text()
    assert "export PATH := $(CURDIR)/.venv/bin:$(PATH)" in makefile
    assert "bash deploy/local/install.sh" in makefile
    assert "make test" in (REPO / ".ci/run").read_text()
