"""The alert rules, their promtool unit tests, their runbook and Alertmanager's routing.

``promtool test rules deploy/prometheus/tests/voicemon_test.yml`` must show every alert both
firing (with its labels and rendered annotations) and resolved, for one install of three
sharing a Prometheus; every alert links its own section of docs/runbook.md, and that section
says what it means, what to check, what to do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from voicemon.devtools.kubernetes_monitoring import (
    RUNBOOK_BASE_URL,
    RenderError,
    render_rules,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/rules/voicemon.yml"
PROMTOOL_TESTS = REPO / "deploy/prometheus/tests/voicemon_test.yml"
RUNBOOK = REPO / "docs/runbook.md"
ALERTMANAGER = REPO / "deploy/alertmanager/alertmanager.yml"


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run deploy/local/install.sh")
    return found


def runbook_sections() -> dict[str, str]:
    """Level-2 headings of the runbook by their GitHub anchor, with their text."""
    parts = re.split(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {
        re.sub(r"[^a-z0-9 -]", "", title.strip().lower()).replace(" ", "-"): body
        for title, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def test_every_alert_links_its_own_runbook_section() -> None:
    sections = runbook_sections()
    anchors = []
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        base, anchor = url.split("#")
        assert base == RUNBOOK_BASE_URL and anchor == rule["alert"].lower(), url
        assert base.startswith("https://") and base.endswith("/docs/runbook.md")
        anchors.append(anchor)
        body = sections[anchor]
        for part in ("**What it means.**", "**What to check.**", "**What to do.**"):
            assert part in body, (rule["alert"], part)
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        assert rule["labels"]["severity"] in {"critical", "warning"}
    assert sorted(sections) == sorted(anchors)  # one section per alert, no other


def test_no_rule_selects_by_a_scrape_job_name() -> None:
    for rule in alerts():
        assert not re.search(r"\bjob\s*=~?", rule["expr"]), rule["alert"]


INSTALL_LABELS = ("cluster", "namespace")
AGGREGATION = re.compile(r"\b(sum|max|min|count|avg|absent)\s*(by\s*\(([^)]*)\))?\s*\(")


def test_every_aggregation_keeps_the_labels_that_tell_installs_apart() -> None:
    for rule in alerts():
        found = AGGREGATION.findall(rule["expr"])
        for operator, _, labels in found:
            if operator == "absent":  # fires only when no install at all has a worker
                continue
            names = [label.strip() for label in labels.split(",")]
            assert names[:2] == list(INSTALL_LABELS), (rule["alert"], operator, labels)
        joins = re.findall(r"\b(on|unless on|and on)\s*\(([^)]*)\)", rule["expr"])
        for _, labels in joins:
            names = [label.strip() for label in labels.split(",")]
            assert names[:2] == list(INSTALL_LABELS) or names == ["job", "instance"], labels


def test_rules_render_with_another_cluster_label_and_runbook_base(tmp_path: Path) -> None:
    base = "https://git.example.org/platform/voicemon/blob/v1/docs/runbook.md"
    rendered = render_rules(RULES.read_text(), "region", base)
    path = tmp_path / "rules.yml"
    path.write_text(rendered)
    done = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    groups = yaml.safe_load(rendered)["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(alerts())
    for rule, original in zip(rules, alerts(), strict=True):
        assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"
        assert "cluster" not in rule["expr"]
        assert rule["expr"] == original["expr"].replace("(cluster, ", "(region, ")


@pytest.mark.parametrize(
    ("label", "base"),
    [
        ("re-gion", RUNBOOK_BASE_URL),
        ("1cluster", RUNBOOK_BASE_URL),
        ("", RUNBOOK_BASE_URL),
        ("cluster", "docs/runbook.md"),
        ("cluster", "https://example.org/runbook.md#top"),
        ("cluster", "ftp://example.org/runbook.md"),
    ],
)
def test_rules_refuse_a_label_or_base_they_cannot_carry(label: str, base: str) -> None:
    with pytest.raises(RenderError):
        render_rules(RULES.read_text(), label, base)


def test_promtool_shows_every_alert_firing_and_resolving() -> None:
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        cwd=PROMTOOL_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cases: dict[str, list[tuple[int, bool]]] = {}
    for test in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            minutes = int(case["eval_time"].removesuffix("m"))
            cases.setdefault(case["alertname"], []).append((minutes, bool(case["exp_alerts"])))
    for rule in alerts():
        evals = sorted(cases.get(rule["alert"], []))
        fired = [t for t, firing in evals if firing]
        assert fired, f"{rule['alert']} is never shown firing"
        assert any(not firing and t > fired[0] for t, firing in evals), (
            f"{rule['alert']} is never shown resolved after firing"
        )


def test_alertmanager_config_is_valid_and_routes_by_severity() -> None:
    amtool = tool("amtool")
    config = f"--config.file={ALERTMANAGER}"
    done = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for severity, receiver in (("critical", "on-call"), ("warning", "team-chat")):
        routed = subprocess.run(
            [amtool, "config", "routes", "test", config, f"severity={severity}"],
            capture_output=True,
            text=True,
        )
        assert routed.stdout.strip() == receiver, routed.stdout + routed.stderr


def _matches(matcher: str, alert: dict[str, str]) -> bool:
    found = re.fullmatch(r'(\w+)(=~?)"([^"]+)"', matcher)
    assert found, matcher
    name, operator, value = found.groups()
    if operator == "=~":
        return re.fullmatch(value, alert.get(name, "")) is not None
    return alert.get(name, "") == value


def _inhibited(target: dict[str, str], firing: list[dict[str, str]]) -> bool:
    """Alertmanager's inhibition: a firing source alert and the target alert both match their
    matchers and agree on every `equal` label (an absent label counts as empty)."""
    for inhibit in yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]:
        if not all(_matches(m, target) for m in inhibit["target_matchers"]):
            continue
        for source in firing:
            if all(_matches(m, source) for m in inhibit["source_matchers"]) and all(
                source.get(label, "") == target.get(label, "") for label in inhibit["equal"]
            ):
                return True
    return False


def test_one_installs_outage_silences_only_its_own_alerts() -> None:
    for inhibit in yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]:
        assert list(inhibit["equal"]) == list(INSTALL_LABELS), inhibit
        source_name = re.findall(r'"([^"|]+)', inhibit["source_matchers"][0])[0]
        for target_name in re.findall(r'"([^"]+)"', inhibit["target_matchers"][0])[0].split("|"):
            staging = {"cluster": "eu-1", "namespace": "staging"}
            source = {"alertname": source_name, **staging}
            assert _inhibited({"alertname": target_name, **staging}, [source])
            for other in ({"cluster": "eu-1", "namespace": "production"},
                          {"cluster": "us-1", "namespace": "staging"}):  # fmt: skip
                assert not _inhibited({"alertname": target_name, **other}, [source])


def test_alertmanager_groups_each_install_apart() -> None:
    group_by = yaml.safe_load(ALERTMANAGER.read_text())["route"]["group_by"]
    assert set(INSTALL_LABELS) <= set(group_by)


def test_inhibitions_name_real_alerts() -> None:
    names = {rule["alert"] for rule in alerts()}
    for inhibit in yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            value = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            assert value, matcher
            assert set(value.group(1).split("|")) <= names, matcher
