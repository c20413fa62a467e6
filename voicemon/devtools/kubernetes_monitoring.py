"""The Kubernetes monitoring manifests generated from their single sources: the PrometheusRule
from deploy/prometheus/rules/voicemon.yml and the Grafana dashboard ConfigMaps from
deploy/grafana/dashboards/*.json. ``python -m voicemon.devtools.kubernetes_monitoring``
rewrites them; tests/unit/test_kubernetes_monitoring.py fails when they differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/voicemon.yml"
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
MONITORING = ROOT / "deploy/kubernetes/monitoring"
NAMESPACE = "voicemon"
PART_OF = {"app.kubernetes.io/part-of": "voicemon"}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, dashboard JSON) as literal blocks, as a person writes them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(header: str, documents: list[dict[str, Any]]) -> str:
    body = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + body


def prometheus_rule(rules_path: Path = RULES) -> str:
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "voicemon", "namespace": NAMESPACE, "labels": dict(PART_OF)},
        "spec": {"groups": groups},
    }
    header = (
        "# GENERATED from deploy/prometheus/rules/voicemon.yml by\n"
        "# `python -m voicemon.devtools.kubernetes_monitoring`: edit the rules file, not this.\n"
        "# The Prometheus Operator loads it when its ruleSelector matches these labels (e.g.\n"
        "# add `release: <your kube-prometheus-stack release>`).\n"
    )
    return _dump(header, [document])


def dashboard_config_maps(folder: Path = DASHBOARDS) -> str:
    documents = []
    for path in sorted(folder.glob("*.json")):
        dashboard = json.dumps(json.loads(path.read_text()), indent=2, ensure_ascii=False)
        metadata = {
            "name": f"{path.stem}-dashboard",
            "namespace": NAMESPACE,
            "labels": {"grafana_dashboard": "1", **PART_OF},
            "annotations": {"grafana_folder": "voicemon"},
        }
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata,
                "data": {path.name: dashboard + "\n"},
            }
        )
    header = (
        "# GENERATED from deploy/grafana/dashboards/*.json by\n"
        "# `python -m voicemon.devtools.kubernetes_monitoring`: edit the dashboards, not this.\n"
        "# Grafana's dashboard sidecar (kube-prometheus-stack: sidecar.dashboards.enabled, with\n"
        "# searchNamespace covering this namespace) loads every ConfigMap labelled\n"
        "# grafana_dashboard=1 into the folder named by grafana_folder.\n"
    )
    return _dump(header, documents)


def generated() -> dict[Path, str]:
    """Each generated file and the text it must hold."""
    return {
        MONITORING / "prometheusrule.yaml": prometheus_rule(),
        MONITORING / "dashboards.yaml": dashboard_config_maps(),
    }


def main() -> None:
    for path, text in generated().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
