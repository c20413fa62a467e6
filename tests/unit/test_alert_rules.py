"""The alert rules, their promtool unit tests, their runbook and Alertmanager's routing.

``promtool test rules deploy/prometheus/tests/voicemon_test.yml`` must show every alert both
firing (with its labels and rendered annotations) and resolved; every alert links its own
section of docs/runbook.md, and that section says what it means, what to check, what to do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

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
        path, anchor = url.split("#")
        assert path == "docs/runbook.md" and anchor == rule["alert"].lower(), url
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


def test_inhibitions_name_real_alerts() -> None:
    names = {rule["alert"] for rule in alerts()}
    for inhibit in yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            value = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
            assert value, matcher
            assert set(value.group(1).split("|")) <= names, matcher
