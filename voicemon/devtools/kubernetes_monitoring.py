"""The Kubernetes monitoring manifests generated from their single sources: the PrometheusRule
from deploy/prometheus/rules/voicemon.yml and the Grafana dashboard ConfigMaps from
deploy/grafana/dashboards/*.json. ``python -m voicemon.devtools.kubernetes_monitoring``
rewrites them; tests/unit/test_kubernetes_monitoring.py fails when they differ.

``python -m voicemon.devtools.kubernetes_monitoring --cluster-label region --runbook-base-url
URL`` prints the alert rules for another cluster label and runbook base instead."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/voicemon.yml"
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
MONITORING = ROOT / "deploy/kubernetes/monitoring"
NAMESPACE = "voicemon"
PART_OF = {"app.kubernetes.io/part-of": "voicemon"}
# The rules file's own cluster label and runbook base; render_rules() swaps in others.
CLUSTER_LABEL = "cluster"
RUNBOOK_BASE_URL = "https://voicemon.example.com/docs/runbook.md"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_GROUPING = re.compile(r"\b(by|on)\s*\(([^)]*)\)")


class RenderError(ValueError):
    """A cluster label or runbook base URL the rules cannot carry."""


def render_rules(text: str, cluster_label: str, runbook_base_url: str) -> str:
    """The rules file's text with ``cluster_label`` for the cluster label in every ``by``/``on``
    grouping and every runbook link under ``runbook_base_url`` (absolute http(s), no ``#``)."""
    if not _LABEL_NAME.fullmatch(cluster_label):
        raise RenderError(f"{cluster_label!r} is not a Prometheus label name.")
    if not re.fullmatch(r"https?://[^\s#]+", runbook_base_url):
        raise RenderError(f"{runbook_base_url!r} is not an absolute http(s) URL without a #.")

    def grouping(match: re.Match[str]) -> str:
        labels = [cluster_label if label.strip() == CLUSTER_LABEL else label.strip()
                  for label in match.group(2).split(",")]  # fmt: skip
        return f"{match.group(1)} ({', '.join(labels)})"

    text = _GROUPING.sub(grouping, text)
    return text.replace(f"runbook_url: {RUNBOOK_BASE_URL}#", f"runbook_url: {runbook_base_url}#")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cluster-label", help="print the rules with this cluster label")
    parser.add_argument("--runbook-base-url", help="print the rules linking this runbook")
    args = parser.parse_args(argv)
    if args.cluster_label or args.runbook_base_url:
        text = RULES.read_text()
        label = args.cluster_label or CLUSTER_LABEL
        print(render_rules(text, label, args.runbook_base_url or RUNBOOK_BASE_URL), end="")
        return
    for path, text in generated().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
