"""deploy/helm/voicemon rendered by ``helm template`` (helm built from its Go module by
deploy/local/install.sh into .tools/bin) for several value sets, each rendering validated
object by object.

Kubernetes' own kinds follow the schema of Kubernetes 1.27, 1.30 and 1.33
(kubernetes-validate, strict: no unknown field). The Prometheus Operator's kinds have no schema
there, so they are checked without one: every field is one the monitoring.coreos.com/v1 CRDs
define, the PrometheusRule holds the rules file rendered with the install's cluster label and
runbook base (and passes ``promtool check rules``), and each ServiceMonitor selects a Service
of the chart by its labels and a port that Service names. Values that cannot work fail the
rendering with one sentence.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from voicemon.devtools import kubernetes_monitoring
from voicemon.devtools.kubernetes_monitoring import render_rules
from voicemon.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/voicemon"
RULES = REPO / "deploy/prometheus/rules/voicemon.yml"
DASHBOARDS = REPO / "deploy/grafana/dashboards"
KUBERNETES_VERSIONS = ("1.27", "1.30", "1.33")
NAMESPACE = "voicemon-staging"
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
DIGEST = "sha256:" + "ab" * 32  # a digest of the right form: the chart only passes it on

Manifest = dict[str, Any]

VALUE_SETS: dict[str, dict[str, Any]] = {
    # The defaults: one role `all`, the API, every monitoring object for kube-prometheus-stack.
    "defaults": {},
    # Scaled out and secured: split roles, SASL_SSL with a CA from a Secret, pinned digests,
    # another cluster label and runbook, the release label of a differently named stack.
    "production": {
        "workers": {
            "all": {"enabled": False},
            "counters": {"enabled": True, "replicas": 6},
            "store": {"enabled": True, "replicas": 1},
        },
        "topics": {"partitions": 6},
        "image": {
            "api": {"repository": "registry.example.org/voicemon-api", "digest": DIGEST},
            "worker": {"repository": "registry.example.org/voicemon-worker", "digest": DIGEST},
        },
        "kafka": {
            "securityProtocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "voicemon"},
            "tls": {"secretName": "kafka-client-tls", "caKey": "ca.pem"},
        },
        "secrets": {"existingSecret": "voicemon-prod-secrets"},
        "jwt": {
            "signingKeyId": "2026-12",
            "issuer": "https://idp.example.org",
            "audience": "voicemon",
            "maxTtlStaffSeconds": 3600,
        },
        "clickhouse": {"cluster": "voicemon"},
        "redis": {
            "mode": "sentinel",
            "url": "",
            "sentinels": ["sentinel-0.redis:26379", "sentinel-1.redis:26379"],
            "waitReplicas": 1,
        },
        "api": {"replicas": 3, "docs": True, "accessLog": True},
        "logs": {"level": "warning"},
        "extraEnv": {"VOICEMON_CLOSE_GRACE_SECONDS": 2400},
        "networkPolicy": {"egress": [{"to": [{"namespaceSelector": {}}]}]},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/v"}},
        "monitoring": {
            "clusterLabel": "region",
            "runbookBaseUrl": "https://git.example.org/voicemon/blob/v1/docs/runbook.md",
            "serviceMonitor": {"labels": {"release": "prom"}, "interval": "30s"},
            "prometheusRule": {"labels": {"release": "prom", "team": "platform"}},
        },
    },
    # A bare install: no API, no monitoring objects, no policy, the namespace's own account,
    # secrets from values (a test cluster), mutual TLS to Kafka.
    "minimal": {
        "api": {"enabled": False},
        "workers": {"all": {"replicas": 1}},
        "topics": {"partitions": 1, "replication": 1},
        "worker": {"pdb": {"enabled": False}},
        "topicsJob": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "serviceAccount": {"create": False},
        "secrets": {
            "create": True,
            "stringData": {
                "VOICEMON_CLICKHOUSE_DSN": "http://voicemon:test@clickhouse:8123/voicemon",
                "VOICEMON_JWT_SECRET": "a-test-cluster-jwt-secret-0123456789abcdef",
            },
        },
        "kafka": {
            "securityProtocol": "SSL",
            "tls": {
                "secretName": "kafka-mtls",
                "caKey": "ca.pem",
                "certKey": "client.pem",
                "keyKey": "client.key",
            },
        },
        "monitoring": {
            "serviceMonitor": {"enabled": False},
            "prometheusRule": {"enabled": False},
            "dashboards": {"enabled": False},
        },
    },
}


def helm() -> str:
    found = REPO / ".tools/bin/helm"
    if found.exists():
        return str(found)
    on_path = shutil.which("helm")
    if on_path is None:
        pytest.fail(
            "helm is not installed: run deploy/local/install.sh (it builds .tools/bin/helm)"
        )
    return on_path


def render_text(
    values: dict[str, Any], version: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return subprocess.run(
        [helm(), "template", "voicemon", str(CHART), "--namespace", NAMESPACE, "--values",
         str(path), "--kube-version", f"{version}.0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@functools.cache
def rendered(name: str, version: str = "1.30") -> tuple[Manifest, ...]:
    tmp = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    try:
        done = render_text(VALUE_SETS[name], version, tmp)
    finally:
        shutil.rmtree(tmp)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def of_kind(name: str, kind: str) -> list[Manifest]:
    return [m for m in rendered(name) if m["kind"] == kind]


def containers(name: str) -> list[tuple[Manifest, Manifest]]:
    workloads = of_kind(name, "Deployment") + of_kind(name, "Job")
    return [(w, c) for w in workloads for c in w["spec"]["template"]["spec"]["containers"]]


def env_of(container: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


SETS = list(VALUE_SETS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", SETS)
def test_every_object_validates_strictly(name: str, version: str) -> None:
    for manifest in rendered(name, version):
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no schema in kubernetes-validate: checked field by field below
        kubernetes_validate.validate(manifest, version, strict=True)
        assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["metadata"]["name"]


def test_each_value_set_renders_what_it_asks_for() -> None:
    kinds = {name: Counter(m["kind"] for m in rendered(name)) for name in SETS}
    assert kinds["defaults"] == Counter({"Deployment": 2, "Service": 2, "PodDisruptionBudget": 2,
                                         "NetworkPolicy": 2, "ServiceAccount": 1, "Job": 1,
                                         "ServiceMonitor": 2, "PrometheusRule": 1,
                                         "ConfigMap": 2})  # fmt: skip
    assert kinds["production"]["Deployment"] == 3  # counters, store, api
    assert kinds["minimal"] == Counter({"Deployment": 1, "Service": 1, "Secret": 1})


@pytest.mark.parametrize("name", SETS)
def test_every_container_is_hardened_probed_and_sized(name: str) -> None:
    for workload, container in containers(name):
        pod = workload["spec"]["template"]["spec"]
        label = f"{name}/{workload['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"][
            "runAsUser"] != 0, label  # fmt: skip
        assert pod["automountServiceAccountToken"] is False, label
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, label
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, label
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], label
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][part].keys(), label
        if workload["kind"] == "Job":
            continue
        port = container["ports"][0]["name"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}


@pytest.mark.parametrize("name", SETS)
def test_every_env_is_a_valid_setting(name: str, tmp_path: Path) -> None:
    """Each container's settings, with what its Secret adds, pass voicemon's own validation
    (the PEM paths, which exist only in the pod, point at a file here)."""
    pem = tmp_path / "file.pem"
    pem.write_text("-")
    secrets = VALUE_SETS[name].get("secrets", {})
    for workload, container in containers(name):
        env = env_of(container)
        fields: dict[str, Any] = {n.removeprefix("VOICEMON_").lower(): v for n, v in env.items()}
        assert set(fields) <= set(Settings.model_fields), set(fields) - set(Settings.model_fields)
        for field in [f for f in fields if f.startswith("kafka_ssl_")]:
            assert fields[field].startswith("/etc/voicemon/kafka/"), fields[field]
            fields[field] = str(pem)
        if fields["kafka_security_protocol"].startswith("SASL_"):
            fields["kafka_sasl_password"] = "from-the-secret"
        key_id = fields.get("jwt_signing_key_id", "k1")
        settings = Settings(**fields, clickhouse_dsn="http://u:p@clickhouse:8123/voicemon",
                            jwt_keys={key_id: "k" * 40})  # fmt: skip
        assert settings.log_format == "json", workload["metadata"]["name"]
        (source,) = container["envFrom"]
        wanted = "voicemon-secrets" if secrets.get("create") else secrets.get(
            "existingSecret", "voicemon-secrets")  # fmt: skip
        assert source["secretRef"]["name"] == wanted


def test_workers_per_role_and_their_replicas() -> None:
    for name, roles in (("defaults", {"all": 4}), ("production", {"counters": 6, "store": 1}),
                        ("minimal", {"all": 1})):  # fmt: skip
        found = {}
        for deployment in of_kind(name, "Deployment"):
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            if container["args"] == ["worker"]:
                role = env_of(container)["VOICEMON_WORKER_ROLE"]
                assert deployment["metadata"]["name"].endswith(f"-worker-{role}")
                found[role] = deployment["spec"]["replicas"]
                assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
        assert found == roles, name


def test_images_default_to_the_app_version_and_digests_pin() -> None:
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    project = (REPO / "pyproject.toml").read_text()
    assert f'version = "{version}"' in project  # the chart's appVersion is voicemon's version
    images = {c["image"] for _, c in containers("defaults")}
    assert images == {f"voicemon-api:{version}", f"voicemon-worker:{version}"}
    pinned = {c["image"] for _, c in containers("production")}
    assert pinned == {
        f"registry.example.org/voicemon-{role}@{DIGEST}" for role in ("api", "worker")
    }


def test_secured_kafka_comes_from_secrets_and_mounted_files() -> None:
    for _, container in containers("production"):
        env = env_of(container)
        assert env["VOICEMON_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["VOICEMON_KAFKA_SSL_CA_FILE"] == "/etc/voicemon/kafka/ca.pem"
        assert "VOICEMON_KAFKA_SASL_PASSWORD" not in env  # from the Secret, never in values
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["kafka-tls"] == "/etc/voicemon/kafka"
    (secret,) = of_kind("minimal", "Secret")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


def test_the_topics_job_is_a_hook_run_before_install_and_upgrade() -> None:
    (job,) = of_kind("defaults", "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics", "ensure"]
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]  # made after the hook


@pytest.mark.parametrize("name", SETS)
def test_services_budgets_and_policies_select_the_pods_they_name(name: str) -> None:
    pods = [d["spec"]["template"] for d in of_kind(name, "Deployment")]

    def selected(selector: dict[str, str]) -> list[Manifest]:
        return [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]

    for deployment in of_kind(name, "Deployment"):
        assert selected(deployment["spec"]["selector"]["matchLabels"])
    for service in of_kind(name, "Service"):
        chosen = selected(service["spec"]["selector"])
        assert chosen, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            for pod in chosen:
                names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
                assert port["targetPort"] in names
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for manifest in of_kind(name, kind):
            key = "selector" if kind == "PodDisruptionBudget" else "podSelector"
            assert selected(manifest["spec"][key]["matchLabels"]), manifest["metadata"]["name"]


def test_network_policies_open_only_the_named_ports() -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind("defaults", "NetworkPolicy")}
    worker, api = policies["voicemon-worker"], policies["voicemon-api"]
    assert [p["port"] for r in worker["spec"]["ingress"] for p in r["ports"]] == ["web"]
    assert [p["port"] for r in api["spec"]["ingress"] for p in r["ports"]] == ["http"]
    assert worker["spec"]["policyTypes"] == ["Ingress"]
    production = of_kind("production", "NetworkPolicy")
    assert all(p["spec"]["policyTypes"] == ["Ingress", "Egress"] for p in production)


@pytest.mark.parametrize(("name", "release"), [("defaults", "kube-prometheus-stack"),
                                               ("production", "prom")])  # fmt: skip
def test_service_monitors_carry_the_release_label_and_select_named_ports(
    name: str, release: str
) -> None:
    services = of_kind(name, "Service")
    monitors = of_kind(name, "ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == release
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert set(spec) <= SERVICE_MONITOR_FIELDS
        selector = spec["selector"]["matchLabels"]
        (service,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        ports = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= ENDPOINT_FIELDS
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
            assert DURATION.match(endpoint["interval"])


@pytest.mark.parametrize(
    ("name", "label", "base"),
    [("defaults", "cluster", kubernetes_monitoring.RUNBOOK_BASE_URL),
     ("production", "region", "https://git.example.org/voicemon/blob/v1/docs/runbook.md")],
)  # fmt: skip
def test_the_prometheus_rule_is_the_rules_file_for_this_install(
    name: str, label: str, base: str, tmp_path: Path
) -> None:
    (rule,) = of_kind(name, "PrometheusRule")
    expected = yaml.safe_load(render_rules(RULES.read_text(), label, base))["groups"]
    assert rule["spec"]["groups"] == expected
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {
        "groups"}  # fmt: skip
    assert rule["metadata"]["labels"]["release"] == VALUE_SETS[name].get("monitoring", {}).get(
        "prometheusRule", {}).get("labels", {}).get("release", "kube-prometheus-stack")  # fmt: skip
    for group in rule["spec"]["groups"]:
        assert set(group) <= RULE_GROUP_FIELDS and group["name"], group
        for item in group["rules"]:
            assert set(item) <= RULE_FIELDS and isinstance(item["expr"], str), item
            assert DURATION.match(item.get("for", "0")), item
            assert item["annotations"]["runbook_url"].startswith(f"{base}#")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run deploy/local/install.sh")
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboards_are_config_maps_for_the_grafana_sidecar() -> None:
    maps = sorted(of_kind("defaults", "ConfigMap"), key=lambda m: m["metadata"]["name"])
    sources = sorted(DASHBOARDS.glob("*.json"))
    assert len(maps) == len(sources)
    for config_map, path in zip(maps, sources, strict=True):
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "voicemon"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())


def test_the_generated_chart_files_are_up_to_date() -> None:
    assert kubernetes_monitoring.stale() == [], (
        "stale chart files: python -m voicemon.devtools.kubernetes_monitoring"
    )


@pytest.mark.parametrize(
    ("redis", "wanted"),
    [
        ({}, {"VOICEMON_REDIS_WAIT_REPLICAS": "0", "VOICEMON_REDIS_WAIT_TIMEOUT_MS": "2000"}),
        (
            {"mode": "sentinel", "url": "", "sentinels": ["s-0:26379", "s-1:26379"],
             "sentinelMaster": "main", "waitReplicas": 2},
            {"VOICEMON_REDIS_SENTINELS": "s-0:26379,s-1:26379",
             "VOICEMON_REDIS_SENTINEL_MASTER": "main", "VOICEMON_REDIS_WAIT_REPLICAS": "2"},
        ),
        ({"mode": "cluster", "url": "redis://node-0.redis:6379/0"},
         {"VOICEMON_REDIS_CLUSTER": "true", "VOICEMON_REDIS_URL": "redis://node-0.redis:6379/0"}),
    ],
)  # fmt: skip
def test_each_redis_mode_becomes_its_settings(
    redis: dict[str, Any], wanted: dict[str, str], tmp_path: Path
) -> None:
    done = render_text({"redis": redis}, "1.30", tmp_path)
    assert done.returncode == 0, done.stderr
    workers = [m for m in yaml.safe_load_all(done.stdout) if m and m["kind"] == "Deployment"]
    for workload in workers:
        env = env_of(workload["spec"]["template"]["spec"]["containers"][0])
        assert {name: env.get(name) for name in wanted} == wanted
        topology = {"VOICEMON_REDIS_SENTINELS", "VOICEMON_REDIS_CLUSTER"} - wanted.keys()
        assert not topology & env.keys()
        fields = {n.removeprefix("VOICEMON_").lower(): v for n, v in env.items()}
        Settings(**fields, clickhouse_dsn="http://u:p@ch:8123/v", jwt_keys={"k1": "k" * 40})


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"redis": {"mode": "sentinel", "waitReplicas": 1}}, "needs redis.sentinels"),
        ({"redis": {"mode": "sentinel", "sentinels": ["s:26379"]}}, "needs redis.waitReplicas"),
        ({"workers": {"counters": {"enabled": True}}}, "enable it alone"),
        ({"workers": {"all": {"enabled": False}}}, "enable at least one role"),
        ({"monitoring": {"clusterLabel": "re-gion"}}, "is not a Prometheus label name"),
        ({"monitoring": {"runbookBaseUrl": "docs/runbook.md"}}, "not an absolute http(s) URL"),
        ({"secrets": {"existingSecret": ""}}, "secrets.existingSecret"),
        ({"secrets": {"create": True}}, "secrets.stringData"),
    ],
)
def test_values_that_cannot_work_fail_in_one_sentence(
    values: dict[str, Any], words: str, tmp_path: Path
) -> None:
    done = render_text(values, "1.30", tmp_path)
    assert done.returncode != 0
    first = done.stderr.splitlines()[0]  # helm adds its "Use --debug" hint below it
    assert first.startswith("Error: ") and words in first, done.stderr


def test_a_kubernetes_older_than_the_chart_supports_is_refused(tmp_path: Path) -> None:
    done = render_text({}, "1.26", tmp_path)
    assert done.returncode != 0 and "kubeVersion" in done.stderr


def test_ports_partitions_drains_and_scrapes_match_the_settings() -> None:
    for name in ("defaults", "production"):
        partitions = VALUE_SETS[name].get("topics", {}).get("partitions", 4)
        ends = ("-worker-all", "-worker-counters")
        counting = [d for d in of_kind(name, "Deployment") if d["metadata"]["name"].endswith(ends)]
        assert [d["spec"]["replicas"] for d in counting] == [partitions]  # one member each
        for budget in of_kind(name, "PodDisruptionBudget"):  # an outage never blocks a drain
            assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        metrics = [s for s in of_kind(name, "Service") if s["metadata"]["name"].endswith(
            "-worker-metrics")]  # fmt: skip
        assert [s["spec"]["publishNotReadyAddresses"] for s in metrics] == [True]
    for _, container in containers("defaults"):
        if container["args"] == ["worker"]:
            assert container["ports"][0]["containerPort"] == Settings.model_fields[
                "worker_web_port"].default  # fmt: skip
        elif container["args"][0] == "api":
            port = Settings.model_fields["api_port"].default
            assert container["args"] == ["api", "--host", "0.0.0.0", "--port", str(port)]
            assert container["ports"][0]["containerPort"] == port


@pytest.mark.parametrize("name", SETS)
def test_helm_lint_passes_strictly(name: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[name]))
    done = subprocess.run(
        [helm(), "lint", "--strict", str(CHART), "--values", str(values), "--kube-version",
         "1.30.0"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"workers": {"all": {"replica": 3}}}, "additional properties 'replica' not allowed"),
        ({"image": {"api": {"digest": "sha256:abc"}}}, "/image/api/digest"),
        ({"logs": {"format": "xml"}}, "/logs/format"),
        ({"topics": {"partitions": 0}}, "/topics/partitions"),
        ({"extraEnv": {"CLOSE_GRACE_SECONDS": "1"}}, "'CLOSE_GRACE_SECONDS' does not match"),
        ({"monitoring": {"serviceMonitor": {"labels": {"release": 1}}}}, "labels/release"),
    ],
)
def test_the_values_schema_refuses_typos_and_wrong_types(
    values: dict[str, Any], words: str, tmp_path: Path
) -> None:
    done = render_text(values, "1.30", tmp_path)
    assert done.returncode != 0
    assert "don't meet the specifications of the schema" in done.stderr and words in done.stderr, (
        done.stderr
    )
