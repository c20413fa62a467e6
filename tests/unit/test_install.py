"""The install: extras per role, the committed locks, the two wheels, and what a producer or
API process loads.

The producer distribution (producer/, voicemon-producer) and an API-only install carry
neither Faust nor chDB; the base install is everything the `voicemon` console script needs;
the worker keeps the five packages of the design card; every lock pins exactly one version
of each package, hashed, the same version in every role lock, and satisfies its pyproject.
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
PRODUCER = tomllib.loads((REPO / "producer" / "pyproject.toml").read_text())["project"]
PRODUCER_PYTHONS = ("3.11", "3.12", "3.13")
HEAVY = {"faust-streaming", "chdb"}  # Faust (the worker) and the embedded engine (~560 MB)
DESIGN_CARD = {"confluent-kafka", "faust-streaming", "redis", "clickhouse-connect",
               "prometheus-client"}  # fmt: skip
LOCKS = {  # lock -> the extras it installs
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


def test_the_producer_distribution_is_the_event_schema_and_the_kafka_client() -> None:
    needs = {canonicalize_name(Requirement(line).name) for line in PRODUCER["dependencies"]}
    assert needs == {"confluent-kafka", "orjson", "msgspec", "pydantic"}
    assert PRODUCER["optional-dependencies"] == {"prometheus": ["prometheus-client>=0.21,<1"]}
    assert PRODUCER["requires-python"] == ">=3.11,<3.14"


def test_the_base_install_runs_the_console_script_it_installs() -> None:
    assert PROJECT["scripts"] == {"voicemon": "runtime.cli:main"}
    assert {"typer", "rich", "redis", "clickhouse-connect"} <= names(requirements())
    assert PROJECT["optional-dependencies"]["cli"] == []  # kept: voicemon[cli] still installs


@pytest.mark.parametrize("extras", [(), ("cli",), ("api",)])
def test_cli_and_api_installs_carry_neither_faust_nor_chdb(extras: tuple[str]) -> None:
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


@pytest.mark.parametrize("version", PRODUCER_PYTHONS)
def test_each_supported_python_has_a_producer_lock_made_by_it(version: str) -> None:
    name = f"producer-py{version}"
    assert (
        f"autogenerated by pip-compile with Python {version}\n"
        in (REPO / "requirements" / f"{name}.lock").read_text()
    )
    pins = lock(name)
    for line in PRODUCER["dependencies"]:
        requirement = Requirement(line)
        pinned = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pinned), f"{name}.lock: {pinned} outside {line}"
    assert not set(pins) & (HEAVY | {"clickhouse-connect", "redis", "fastapi", "typer",
                                     "pydantic-settings", "prometheus-client"})  # fmt: skip


def test_role_locks_carry_only_their_role() -> None:
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
    loaded = _loaded_after("aggregators.query.api, aggregators.query.serve, runtime.cli")
    assert {"fastapi", "uvicorn"} <= loaded
    assert not loaded & {"faust", "mode", "chdb", "aiokafka"}


def test_the_cli_starts_without_the_clients_a_command_may_not_need() -> None:
    """Each command imports the store, Redis, HTTP and JWT clients it uses when it runs: a
    usage mistake, a bad setting or a Kafka-only command starts in 0.3 s instead of 0.5 s."""
    loaded = _loaded_after("runtime.cli")
    assert {"typer", "pydantic_settings", "confluent_kafka"} <= loaded
    heavy = {"clickhouse_connect", "chdb", "redis", "httpx", "jwt", "fastapi", "pyarrow", "faust"}
    assert not loaded & heavy


def test_install_and_ci_use_the_project_environment_and_the_lock() -> None:
    install = (REPO / "deploy/local/install.sh").read_text()
    assert "-m venv .venv" in install
    assert "install -q --require-hashes -r requirements/dev.lock" in install
    assert "--no-deps --no-build-isolation -e ." in install
    makefile = (REPO / "Makefile").read_text()
    assert "export PATH := $(CURDIR)/.venv/bin:$(PATH)" in makefile
    assert "bash deploy/local/install.sh" in makefile
    assert "make test" in (REPO / ".ci/run").read_text()


def _wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return next(out.glob("*.whl"))


def test_the_wheels_ship_what_they_should_and_nothing_else(tmp_path: Path) -> None:
    import zipfile

    producer = zipfile.ZipFile(_wheel(REPO / "producer", tmp_path / "producer")).namelist()
    assert {name.split("/")[0] for name in producer if ".dist-info" not in name} == {
        "voicemon_producer"
    }
    assert "voicemon_producer/py.typed" in producer
    main = zipfile.ZipFile(_wheel(REPO, tmp_path / "main"))
    tops = {name.split("/")[0] for name in main.namelist() if ".dist-info" not in name}
    # consumers/ and aggregators/ are top level by CONTRACT §9; runtime/ holds the entry points.
    assert tops == {"voicemon", "voicemon_producer", "consumers", "aggregators", "runtime"}
    assert not [name for name in main.namelist() if name.startswith("voicemon/devtools")]
    assert "voicemon/py.typed" in main.namelist()
