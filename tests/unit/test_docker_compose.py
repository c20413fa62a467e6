"""docker-compose.yml follows the Compose Specification and is wired the way voicemon needs.

The official Compose Specification JSON schema is third-party and is not vendored into the
repository. It is taken from a pinned PyPI wheel that ships an unmodified copy of it
(``ecs-composex`` bundles ``compose-spec.json`` from compose-spec/compose-spec, January 2025),
fetched once with ``pip download --no-deps`` (nothing is installed) and cached in ``var/cache/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from voicemon.settings import Settings
from voicemon.topics import topic_specs

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CACHE_DIR = REPO / "var" / "cache" / "compose-spec"

SCHEMA_PACKAGE = "ecs-composex"
SCHEMA_VERSION = "1.1.9"
SCHEMA_MEMBER = "ecs_composex/specs/compose-spec.json"
SCHEMA_SHA256 = "a85a0e558502b7fec90b3ad4095d721e31749e9a305b1d80e09c1e64f939b92d"

VOICEMON_ENV = ("VOICEMON_KAFKA_BOOTSTRAP", "VOICEMON_REDIS_URL", "VOICEMON_CLICKHOUSE_DSN")
TOPICS = (
    "voice.pipeline.events",
    "voice.pipeline.events.dlq",
    "voice.pipeline.snapshots",
    "voice.organizations",
)


def _download_schema() -> bytes:
    """Fetch the pinned wheel (no dependencies, nothing installed) and read the schema out."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    requirement = f"{SCHEMA_PACKAGE}=={SCHEMA_VERSION}"
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            requirement,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"could not download {requirement} for the compose-spec schema: {exc}")
        if proc.returncode != 0:
            pytest.fail(
                f"`pip download --no-deps {requirement}` failed (exit {proc.returncode}); the "
                f"compose-spec schema cannot be checked without it:\n{proc.stderr[-2000:]}"
            )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            pytest.fail(f"expected one wheel of {requirement}, pip left {wheels}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                return wheel.read(SCHEMA_MEMBER)
            except KeyError:
                pytest.fail(f"{wheels[0].name} has no {SCHEMA_MEMBER}")


@pytest.fixture(scope="session")
def compose_schema() -> dict[str, Any]:
    cached = CACHE_DIR / f"{SCHEMA_PACKAGE}-{SCHEMA_VERSION}-compose-spec.json"
    data = cached.read_bytes() if cached.is_file() else _download_schema()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SCHEMA_SHA256:
        cached.unlink(missing_ok=True)
        pytest.fail(
            f"compose-spec schema from {SCHEMA_PACKAGE} has sha256 {digest}, "
            f"expected {SCHEMA_SHA256}"
        )
    if not cached.is_file():
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(cached)
    schema: dict[str, Any] = json.loads(data)
    Draft7Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def _schema_errors(schema: dict[str, Any], doc: object) -> list[str]:
    errors = Draft7Validator(schema).iter_errors(doc)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def _env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def test_compose_file_matches_the_compose_specification(
    compose_schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert "version" not in compose, "the Compose Specification has no top-level `version`"
    errors = _schema_errors(compose_schema, compose)
    assert not errors, "docker-compose.yml violates the compose-spec schema:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "broken",
    [
        {"services": {"api": {"image": "x", "ports": 12}}},
        {"services": {"api": {"image": "x"}}, "servicez": {}},
        {"services": {"api": {"image": "x", "healthcheck": {"tset": ["CMD", "true"]}}}},
        {"services": {"api": {"image": "x", "depends_on": {"db": {"condition": "healthy"}}}}},
    ],
    ids=["ports-not-a-list", "unknown-top-level-key", "unknown-healthcheck-key", "bad-condition"],
)
def test_schema_rejects_broken_documents(
    compose_schema: dict[str, Any], broken: dict[str, Any]
) -> None:
    assert _schema_errors(compose_schema, broken), f"schema accepted an invalid file: {broken}"


def test_service_healthy_dependencies_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            continue  # short form means service_started
        for dep, spec in depends_on.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                )


def test_bind_mounts_and_build_contexts_exist(compose: dict[str, Any]) -> None:
    base = COMPOSE_FILE.parent
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and source.startswith("."):
                assert (base / source).exists(), f"{name} bind-mounts missing path {source}"
        build = service.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            dockerfile = base / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name} builds from missing {dockerfile}"


@pytest.mark.parametrize("service", ["worker", "api"])
def test_voicemon_services_get_their_connection_settings(
    compose: dict[str, Any], service: str
) -> None:
    env = _env(compose["services"][service])
    missing = [key for key in VOICEMON_ENV if not env.get(key)]
    assert not missing, f"{service} lacks {missing}"


def test_kafka_init_ensures_every_contract_topic(compose: dict[str, Any]) -> None:
    """kafka-init runs `voicemon topics ensure` (tests/integration/test_topics.py proves what
    it creates) with the settings that name the topics and the broker."""
    init = compose["services"]["kafka-init"]
    assert init["command"] == ["topics", "ensure"] and init["image"].startswith("voicemon")
    env = _env(init)
    assert env.get("VOICEMON_KAFKA_BOOTSTRAP") == "kafka:9092"
    assert not any(key.endswith("_TOPIC") for key in env)  # the contract's names, defaults
    assert {spec.name for spec in topic_specs(Settings())} == set(TOPICS)


def test_prometheus_scrapes_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"voicemon-worker", "voicemon-api"} <= set(jobs)
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert target.split(":")[0] in compose["services"], f"unknown target {target}"


def test_prometheus_sends_alerts_to_the_compose_alertmanager(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    (manager,) = config["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]
    service = compose["services"]["alertmanager"]
    image, tag = service["image"].split(":")
    assert image == "prom/alertmanager" and tag.startswith("v") and tag != "latest"
    mount = "./deploy/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
    assert mount in service["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in service["command"]
    assert service["healthcheck"]["test"]


# The images, one per role (Dockerfile): each installs its lock, hash-checked, and then
# voicemon's wheel with the role's extras and no index (a dependency missing from the lock
# fails the build). tests/unit/test_install.py checks what each lock holds.
ROLES = {
    "api": ("requirements/api.lock", "voicemon[api]"),
    "worker": ("requirements/worker.lock", "voicemon[worker]"),
    "embedded": ("requirements/embedded.lock", "voicemon[worker,embedded]"),
}


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage of the Dockerfile: its (instruction, arguments), continuations joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = arguments.partition(" AS ")
            current = [("FROM", base.strip())]
            stages[name.strip()] = current
        else:
            current.append((instruction.upper(), " ".join(arguments.split())))
    return stages


def _chain(stages: dict[str, list[tuple[str, str]]], name: str) -> list[tuple[str, str]]:
    """A stage's instructions after those of the stages it is built FROM."""
    base = stages[name][0][1]
    return (_chain(stages, base) if base in stages else []) + stages[name]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_image_installs_its_lock_then_voicemon_with_its_extras(role: str) -> None:
    lock, requirement = ROLES[role]
    steps = _chain(_dockerfile_stages(), role)
    assert ("COPY", f"{lock} /tmp/role.lock") in steps
    assert ("RUN", "pip install --require-hashes -r /tmp/role.lock && pip install --no-index "
            f'--find-links /wheels "{requirement}"') in steps  # fmt: skip
    assert ("COPY", "--from=wheel /wheels /wheels") in steps
    assert steps[-1] == ("USER", "voicemon")
    assert ("ENTRYPOINT", '["voicemon"]') in steps
    assert (REPO / lock).is_file()


def test_the_wheel_is_built_with_the_pinned_build_backend() -> None:
    steps = _dockerfile_stages()["wheel"]
    assert ("RUN", "pip install --require-hashes -r requirements/build.lock") in steps
    assert ("RUN", "pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .") in steps
    installs = [args for kind, args in steps if kind == "RUN" and "pip install" in args]
    assert installs == ["pip install --require-hashes -r requirements/build.lock"]


def test_the_last_stage_is_the_worker_and_no_stage_installs_outside_a_lock() -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "worker"
    for name, steps in stages.items():
        for kind, args in steps:
            if kind == "RUN" and "pip install" in args:
                for command in args.split("&&"):
                    assert "--require-hashes -r" in command or "--no-index" in command, (
                        f"{name} installs outside its lock: {command}"
                    )


@pytest.mark.parametrize(("service", "target"), [("worker", "worker"), ("api", "api"),
                                                 ("kafka-init", "api")])  # fmt: skip
def test_compose_builds_the_chdb_less_role_images_for_its_clickhouse_server(
    compose: dict[str, Any], service: str, target: str
) -> None:
    spec = compose["services"][service]
    assert spec["build"] == {"context": ".", "target": target}
    assert spec["image"] == f"voicemon-{target}:local"
    assert target in _dockerfile_stages()
    dsn = _env(spec)["VOICEMON_CLICKHOUSE_DSN"]
    assert dsn.startswith("http://")  # a server: the embedded image is not needed


def _labels(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The LABELs of a chain of instructions, later ones winning (as docker build does)."""
    found: dict[str, str] = {}
    for kind, args in steps:
        if kind == "LABEL":
            found |= dict(re.findall(r'(\S+?)="([^"]*)"', args))
    return found


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_image_carries_the_oci_labels(role: str) -> None:
    steps = _chain(_dockerfile_stages(), role)
    labels = _labels(steps)
    prefix = "org.opencontainers.image."
    assert labels[prefix + "title"] == f"voicemon-{role}"
    for key in ("description", "version", "revision", "created", "base.name"):
        assert labels[prefix + key], key
    assert labels[prefix + "version"] == "${VERSION}"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert ("ARG", f"VERSION={version}") in steps  # the default is the package's version
    base = _dockerfile_stages()["python"][0][1]
    assert labels[prefix + "base.name"].endswith("/" + base.split("@")[0])
