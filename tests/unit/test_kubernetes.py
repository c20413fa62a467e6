"""deploy/kubernetes: the manifests parse, hold what production needs, and agree with the
settings (every VOICEMON_* name is a Settings field; ports are the settings' defaults).

When the ``kubernetes-validate`` package is installed (it bundles the Kubernetes OpenAPI
schemas, so it needs no network), every object is also validated strictly against the
schema of a recent Kubernetes release; when ``kubectl`` is on the PATH, ``kubectl
kustomize`` must build the kustomization offline.
"""

from __future__ import annotations

import shlex
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voicemon.settings import Settings

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = FOLDER / "kustomization.yaml"
NAMESPACE = "voicemon"
KUBERNETES_VERSION = "1.30"
# The image of each workload: one per role (Dockerfile targets); the worker's carries no chDB.
ROLE_IMAGES = {
    "voicemon-api": "voicemon-api",
    "voicemon-topics": "voicemon-api",  # topics ensure needs only the CLI
    "voicemon-worker": "voicemon-worker",
}

Manifest = dict[str, Any]


def _manifests() -> list[Manifest]:
    found: list[Manifest] = []
    for path in sorted(FOLDER.glob("*.yaml")):
        if path == KUSTOMIZATION:
            continue
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    return found


def _of_kind(kind: str) -> list[Manifest]:
    return [m for m in _manifests() if m["kind"] == kind]


def _one(kind: str, name: str) -> Manifest:
    (found,) = [m for m in _of_kind(kind) if m["metadata"]["name"] == name]
    return found


def _containers() -> list[tuple[Manifest, Manifest]]:
    return [
        (deployment, container)
        for deployment in _of_kind("Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
    ]


def _port(container: Manifest, port: int | str) -> int:
    """A container port by number or name."""
    for declared in container["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"{container['name']} declares no port {port}")


def _field(env_name: str) -> str:
    assert env_name.startswith("VOICEMON_"), env_name
    return env_name.removeprefix("VOICEMON_").lower()


def _config() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "voicemon-config")["data"]
    return data


def _version() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def test_the_kinds_production_needs_are_there() -> None:
    kinds = Counter(m["kind"] for m in _manifests())
    for kind, least in {
        "Namespace": 1,
        "ConfigMap": 1,
        "Secret": 1,
        "Deployment": 2,
        "Service": 2,
        "PodDisruptionBudget": 2,
    }.items():
        assert kinds[kind] >= least, kind
    assert {d["metadata"]["name"] for d in _of_kind("Deployment")} == {
        "voicemon-worker",
        "voicemon-api",
    }


def test_every_object_is_in_the_namespace_and_the_kustomization_lists_every_file() -> None:
    assert _one("Namespace", NAMESPACE)
    for manifest in _manifests():
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["metadata"]["name"]
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["namespace"] == NAMESPACE
    files = {p.name for p in FOLDER.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["resources"][0] == "namespace.yaml"


def test_every_container_has_health_and_readiness_probes() -> None:
    for deployment, container in _containers():
        name = f"{deployment['metadata']['name']}/{container['name']}"
        live, ready = container.get("livenessProbe"), container.get("readinessProbe")
        assert live and ready, name
        assert live["httpGet"]["path"] == "/healthz", name
        assert ready["httpGet"]["path"] == "/readyz", name
        ports = {_port(container, probe["httpGet"]["port"]) for probe in (live, ready)}
        assert ports == {container["ports"][0]["containerPort"]}, name


def test_every_pod_runs_hardened_with_resources() -> None:
    for deployment, container in _containers():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][part].keys()
        assert container["image"] == f"{ROLE_IMAGES[deployment['metadata']['name']]}:{_version()}"


def test_every_env_name_is_a_setting() -> None:
    names = set(_config())
    names |= set(_one("Secret", "voicemon-secrets")["stringData"])
    for _, container in _containers():
        names |= {env["name"] for env in container.get("env", [])}
        for source in container["envFrom"]:
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            assert _one(kind, ref["name"])
    assert names
    for name in names:
        assert _field(name) in Settings.model_fields, name


def test_the_config_is_valid_settings_and_secrets_stay_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in _config().items():  # read as a pod reads them: environment strings
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.topic_partitions == 4
    assert settings.worker_web_bind == "0.0.0.0"
    assert not settings.redis_url.get_secret_value().split("//", 1)[1].count("@")  # no password
    secret = _one("Secret", "voicemon-secrets")
    assert set(secret["stringData"]) == {"VOICEMON_CLICKHOUSE_DSN", "VOICEMON_JWT_SECRET"}
    assert secret["stringData"]["VOICEMON_CLICKHOUSE_DSN"].startswith("http://")
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())
    assert not {"VOICEMON_CLICKHOUSE_DSN", "VOICEMON_JWT_SECRET"} & set(_config())


def test_workers_match_the_partitions_and_the_settings_ports() -> None:
    deployment = _one("Deployment", "voicemon-worker")
    assert deployment["spec"]["replicas"] == int(_config()["VOICEMON_TOPIC_PARTITIONS"])
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] + container["args"] == ["voicemon", "worker"]
    assert {e["name"]: e["value"] for e in container["env"]}["VOICEMON_WORKER_ROLE"] == "all"
    port = _port(container, "web")
    assert port == _default("worker_web_port") == int(_config()["VOICEMON_WORKER_WEB_PORT"])
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 60


def test_the_api_serves_on_the_settings_port() -> None:
    deployment = _one("Deployment", "voicemon-api")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = shlex.join(container["command"] + container["args"])
    assert command == f"voicemon api --host 0.0.0.0 --port {_default('api_port')}"
    assert _port(container, "http") == _default("api_port")


def test_services_and_budgets_select_the_pods_they_name() -> None:
    pods = {
        d["metadata"]["name"]: (
            d["spec"]["template"]["metadata"]["labels"],
            d["spec"]["template"]["spec"]["containers"][0],
        )
        for d in _of_kind("Deployment")
    }
    for deployment in _of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pods[deployment["metadata"]["name"]][0].items()

    def selected(selector: dict[str, str]) -> list[str]:
        return [name for name, (labels, _) in pods.items() if selector.items() <= labels.items()]

    services = {s["metadata"]["name"]: s for s in _of_kind("Service")}
    assert set(services) == {"voicemon-api", "voicemon-worker-metrics"}
    for name, deployment_name in (
        ("voicemon-api", "voicemon-api"),
        ("voicemon-worker-metrics", "voicemon-worker"),
    ):
        service = services[name]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        assert selected(service["spec"]["selector"]) == [deployment_name]
        container = pods[deployment_name][1]
        for port in service["spec"]["ports"]:
            assert _port(container, port["targetPort"]) == port["port"]

    budgets = {b["metadata"]["name"]: b["spec"] for b in _of_kind("PodDisruptionBudget")}
    assert budgets["voicemon-worker"]["maxUnavailable"] == 1
    assert budgets["voicemon-api"]["minAvailable"] == 1
    for name, spec in budgets.items():
        assert selected(spec["selector"]["matchLabels"]) == [name]


def test_every_object_follows_the_kubernetes_schema() -> None:
    for manifest in _manifests():
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_a_job_ensures_the_topics_with_the_shared_settings() -> None:
    job = _one("Job", "voicemon-topics")
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] + container["args"] == ["voicemon", "topics", "ensure"]
    sources = {ref.get("configMapRef", ref.get("secretRef", {})).get("name")
               for ref in container["envFrom"]}  # fmt: skip
    assert sources == {"voicemon-config", "voicemon-secrets"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "OnFailure"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_image_is_pinned_to_the_project_version() -> None:
    """Never `latest`: with imagePullPolicy IfNotPresent a node would keep the first `latest`
    it pulled. The kustomization's tag is the same pinned version."""
    workloads = [*_of_kind("Deployment"), *_of_kind("Job")]
    for workload in workloads:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            expected = f"{ROLE_IMAGES[workload['metadata']['name']]}:{_version()}"
            assert container["image"] == expected, workload["metadata"]["name"]
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["images"] == [
        {"name": image, "newTag": _version()} for image in sorted(set(ROLE_IMAGES.values()))
    ]
    assert ":latest" not in "".join(p.read_text() for p in FOLDER.rglob("*.yaml"))


def test_budgets_never_block_a_drain_during_an_outage() -> None:
    """A dependency outage makes every pod unready; budgets must still let them be evicted."""
    for budget in _of_kind("PodDisruptionBudget"):
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_workers_are_scraped_while_not_ready() -> None:
    service = _one("Service", "voicemon-worker-metrics")
    assert service["spec"]["publishNotReadyAddresses"] is True
