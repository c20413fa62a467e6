"""The Helm chart's monitoring files generated from their single sources: the alert rules
(deploy/prometheus/rules/voicemon.yml, with placeholders the chart fills with its cluster label
and runbook base URL) and the Grafana dashboards (deploy/grafana/dashboards/*.json), into
deploy/helm/voicemon/files/. ``python -m voicemon.devtools.kubernetes_monitoring`` rewrites
them; tests/unit/test_helm_chart.py fails when they differ.

``python -m voicemon.devtools.kubernetes_monitoring --cluster-label region --runbook-base-url
URL`` prints the alert rules for another cluster label and runbook base instead."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/voicemon.yml"
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
CHART_FILES = ROOT / "deploy/helm/voicemon/files"
CHART_CLUSTER_LABEL = "__CLUSTER_LABEL__"  # replaced by the chart's templates/monitoring.yaml
CHART_RUNBOOK_BASE_URL = "https://__RUNBOOK_BASE_URL__"
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
    """Multi-line strings (PromQL) as literal blocks, as a person writes them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def chart_rules(rules_path: Path = RULES) -> str:
    """The rule groups for the chart's PrometheusRule, with its placeholders."""
    rendered = render_rules(rules_path.read_text(), CHART_CLUSTER_LABEL, CHART_RUNBOOK_BASE_URL)
    groups = yaml.safe_load(rendered)["groups"]
    body = yaml.dump({"groups": groups}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100)  # fmt: skip
    header = (
        "# GENERATED from deploy/prometheus/rules/voicemon.yml by\n"
        "# `python -m voicemon.devtools.kubernetes_monitoring`: edit the rules file, not this.\n"
    )
    return header + body.replace(CHART_RUNBOOK_BASE_URL, "__RUNBOOK_BASE_URL__")


def generated() -> dict[Path, str]:
    """Each generated file and the text it must hold."""
    files = {CHART_FILES / "voicemon-rules.yml": chart_rules()}
    for path in sorted(DASHBOARDS.glob("*.json")):
        files[CHART_FILES / "dashboards" / path.name] = path.read_text()
    return files


def stale() -> list[Path]:
    """Generated files that differ from what they must hold, and stray ones."""
    wanted = generated()
    found = {p for p in CHART_FILES.rglob("*") if p.is_file()}
    differing = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    return sorted(differing + [p for p in found if p not in wanted])


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
    for path in stale():
        if path in generated():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generated()[path])
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
