"""deploy/kubernetes/monitoring: ServiceMonitors, the PrometheusRule and the Grafana dashboard
ConfigMaps, validated offline.

The ConfigMaps follow the Kubernetes schema (kubernetes-validate, strict). The Prometheus
Operator's kinds have no schema in kubernetes-validate, so they are checked without one: every
field is one the monitoring.coreos.com/v1 CRDs define (the field names below are those of the
CRDs' OpenAPI schemas), the PrometheusRule holds exactly the groups of
deploy/prometheus/rules/voicemon.yml (and passes ``promtool check rules``), and each
ServiceMonitor selects a Service of the manifests by its labels and a port that Service names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voicemon.devtools import kubernetes_monitoring

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "deploy/kubernetes/monitoring"
APP_FOLDER = REPO / "deploy/kubernetes"
KUBERNETES_VERSION = "1.30"
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")
# Fields of monitoring.coreos.com/v1 (the CRDs' OpenAPI schemas; additionalProperties false).
RULE_GROUP_FIELDS = {"name", "interval", "labels", "limit", "partial_response_strategy",
                     "query_offset", "rules"}  # fmt: skip
RULE_FIELDS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
ENDPOINT_FIELDS = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout",
                   "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings",
                   "params", "tlsConfig", "bearerTokenSecret", "authorization", "basicAuth",
                   "oauth2", "followRedirects", "enableHttp2", "filterRunning", "proxyUrl",
                   "trackTimestampsStaleness"}  # fmt: skip
SERVICE_MONITOR_FIELDS = {"selector", "endpoints", "namespaceSelector", "jobLabel",
                          "targetLabels", "podTargetLabels", "sampleLimit", "targetLimit",
                          "attachMetadata", "scrapeProtocols"}  # fmt: skip

Manifest = dict[str, Any]


def _documents(folder: Path) -> list[Manifest]:
    found: list[Manifest] = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found.extend(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    return found


def _of_kind(kind: str, folder: Path = FOLDER) -> list[Manifest]:
    return [m for m in _documents(folder) if m["kind"] == kind]


def test_the_generated_manifests_are_up_to_date() -> None:
    for path, text in kubernetes_monitoring.generated().items():
        assert path.read_text() == text, (
            f"{path.relative_to(REPO)} is stale: python -m voicemon.devtools.kubernetes_monitoring"
        )


def test_the_prometheus_rule_holds_exactly_the_rules_file() -> None:
    (rule,) = _of_kind("PrometheusRule")
    rules_file = yaml.safe_load((REPO / "deploy/prometheus/rules/voicemon.yml").read_text())
    assert rule["spec"]["groups"] == rules_file["groups"]
    assert (rule["apiVersion"], rule["metadata"]["namespace"]) == (
        "monitoring.coreos.com/v1",
        "voicemon",
    )


def test_the_prometheus_rule_has_only_fields_of_its_crd() -> None:
    (rule,) = _of_kind("PrometheusRule")
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= RULE_GROUP_FIELDS and group["name"], group
        for item in group["rules"]:
            assert set(item) <= RULE_FIELDS and isinstance(item["expr"], str), item
            assert DURATION.match(item.get("for", "0")), item
            for mapping in (item.get("labels", {}), item.get("annotations", {})):
                assert all(isinstance(v, str) for v in mapping.values()), item


def test_the_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run deploy/local/install.sh")
    (rule,) = _of_kind("PrometheusRule")
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_service_monitors_select_the_services_and_their_named_ports() -> None:
    services = {s["metadata"]["name"]: s for s in _of_kind("Service", APP_FOLDER)}
    monitors = _of_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"voicemon-worker", "voicemon-api"}
    for monitor in monitors:
        spec = monitor["spec"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(spec) <= SERVICE_MONITOR_FIELDS
        selector = spec["selector"]["matchLabels"]
        (service,) = [s for s in services.values()
                      if selector.items() <= s["metadata"]["labels"].items()]  # fmt: skip
        ports = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= ENDPOINT_FIELDS
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
            assert DURATION.match(endpoint["interval"])


def test_dashboard_config_maps_carry_each_dashboard_for_the_grafana_sidecar() -> None:
    maps = _of_kind("ConfigMap")
    dashboards = sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))
    assert len(maps) == len(dashboards)
    for config_map, path in zip(sorted(maps, key=lambda m: m["metadata"]["name"]), dashboards,
                                strict=True):  # fmt: skip
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())
        kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_file_in_the_namespace() -> None:
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "voicemon"
    files = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert all(m["metadata"]["namespace"] == "voicemon" for m in _documents(FOLDER))


@pytest.mark.parametrize("folder", [APP_FOLDER, FOLDER], ids=["app", "monitoring"])
def test_kustomize_builds_offline(folder: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        # kubectl is not voicemon's to install; the manifests are still validated above.
        pytest.skip("kubectl is not installed: kustomize build not checked")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    built = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert len(built) == len(_documents(folder))
