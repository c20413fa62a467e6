"""The Grafana dashboards and the Prometheus alert rules run against the real thing: every
PromQL expression through a real Prometheus scraping a live worker (under a scrape job name
no deployment uses, with a Kubernetes-like namespace label), every history SQL query on the
hourly snapshots that worker wrote and on the daily snapshots of a closed day."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis as AsyncRedis

from aggregators.closing.closer import build_closer
from aggregators.closing.window_state import WindowState
from aggregators.query.auth import mint
from consumers.raw_writer import RawWriter
from consumers.rows import Position, RawRow
from tests.integration.harness import Pipeline
from tests.ports import free_port
from voicemon.devtools.loadgen import LoadMix
from voicemon.event import EventType, PipelineEvent
from voicemon.settings import DEFAULT_STAGES, Settings
from voicemon.store import Client
from voicemon.windows import DAY_MS, HOUR_MS

ROOT = Path(__file__).resolve().parents[2]
LIVE_DASHBOARD = ROOT / "deploy/grafana/dashboards/voicemon-live.json"
HISTORY_DASHBOARD = ROOT / "deploy/grafana/dashboards/voicemon-history.json"
ALERT_RULES = ROOT / "deploy/prometheus/rules/voicemon.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
FAST_CLOSER = {"VOICEMON_CLOSER_INTERVAL_SECONDS": "1", "VOICEMON_LATE_DEBOUNCE_SECONDS": "1"}

# Grafana's variables, as a dashboard over the last hour would expand them ("All" for the
# namespace and instance variables).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$__range_s": "3600",
    "$namespace": ".*",
    "$instance": ".*",
}
SCRAPE_JOB = "kubernetes-pods"  # a job name no rule or panel may depend on
# The panels that must show data while events flow and the API is used (the others need a
# duplicate, a late event, an outage, ... to draw anything; their queries must still run).
CORE_LIVE_PANELS = (
    "Workers up",
    "Throughput by event type",
    "DLQ by reason",
    "End-to-end latency quantiles",
    "Consumer lag by partition",
    "Messages appended per partition",
    "Committed per partition",
    "Ingest paused by dependency",
    "Closer leader",
    "API requests by route",
    "API errors by status",
    "API latency",
)

needs_prometheus = pytest.mark.skipif(
    not Path(PROMETHEUS).exists(), reason="prometheus is not installed (deploy/local/install.sh)"
)


# -- reading the dashboards and rules ------------------------------------------------------
def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query, rows' nested panels included."""
    for panel in dashboard["panels"]:
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                yield nested["title"], target


def dashboard_promql() -> list[tuple[str, str]]:
    dashboard = json.loads(LIVE_DASHBOARD.read_text())
    return [(title, t["expr"]) for title, t in panel_targets(dashboard)]


def rules_promql() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [
        (f"{group['name']}/{rule.get('alert') or rule['record']}", rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]


def history_sql() -> list[tuple[str, str]]:
    dashboard = json.loads(HISTORY_DASHBOARD.read_text())
    return [(title, t["rawSql"]) for title, t in panel_targets(dashboard)]


def expand_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unexpanded Grafana variable in {expr!r}"
    return expr


def expand_sql(sql: str, period: str = "hourly") -> str:
    """The ClickHouse plugin's macros over a 7-day dashboard range (90 days for daily rows),
    as plain ClickHouse SQL, with the dashboard's period variable set to ``period``."""
    days = 7 if period == "hourly" else 90
    sql = sql.replace("${period}", period)
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        rf"(\1 >= now() - INTERVAL {days} DAY AND \1 <= now())",
        sql,
    )
    sql = sql.replace("$__fromTime", f"(now() - INTERVAL {days} DAY)").replace("$__toTime", "now()")
    assert "$" not in sql, f"unexpanded Grafana macro in {sql!r}"
    return sql


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


@pytest.mark.parametrize(
    ("path", "plugin"),
    [(LIVE_DASHBOARD, "prometheus"), (HISTORY_DASHBOARD, "grafana-clickhouse-datasource")],
)
def test_dashboards_choose_their_datasource_by_variable(path: Path, plugin: str) -> None:
    """No hard-coded datasource uid: every panel and query takes ``${datasource}``, a
    variable listing the datasources of the right plugin (so the dashboards work under a
    Grafana provisioned by anyone, e.g. a kube-prometheus-stack sidecar)."""
    dashboard = json.loads(path.read_text())
    wanted = {"type": plugin, "uid": "${datasource}"}
    assert all(t["datasource"] == wanted for _, t in panel_targets(dashboard))
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    assert all(p["datasource"] == wanted for p in panels if p["type"] != "row")
    variable = variables(dashboard)["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", plugin)
    uids = re.findall(r'"uid":\s*"([^"]*)"', path.read_text())
    assert set(uids) <= {"${datasource}", "-- Grafana --", dashboard["uid"]}


def test_live_panels_filter_by_namespace_and_instance_and_never_by_job() -> None:
    live = json.loads(LIVE_DASHBOARD.read_text())
    for name in ("namespace", "instance"):
        variable = variables(live)[name]
        assert variable["includeAll"] and variable["allValue"] == ".*", name
    for title, expr in dashboard_promql():
        selectors = re.findall(r"voicemon_\w+\{([^}]*)\}", expr)
        assert selectors and len(selectors) == len(re.findall(r"voicemon_\w+", expr)), title
        assert all('namespace=~"$namespace"' in s and 'instance=~"$instance"' in s
                   for s in selectors), title  # fmt: skip
    for name, expr in dashboard_promql() + rules_promql():
        assert "job=" not in expr.replace(" ", ""), name
    assert len(dashboard_promql()) >= 30 and len(history_sql()) >= 10


def test_workers_up_is_red_at_zero() -> None:
    live = json.loads(LIVE_DASHBOARD.read_text())
    (panel,) = [p for p in live["panels"] if p["title"] == "Workers up"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0] == {"color": "red", "value": None}
    assert [s["value"] for s in steps[1:]] == [1] and steps[1]["color"] == "green"
    assert panel["targets"][0]["expr"].endswith("or vector(0)")  # 0, not "No data"


def test_history_shows_hourly_or_daily_rows() -> None:
    history = json.loads(HISTORY_DASHBOARD.read_text())
    period = variables(history)["period"]
    assert [o["value"] for o in period["options"]] == ["hourly", "daily"]
    for title, sql in history_sql():
        assert "period_type = '${period}'" in sql and "'hourly'" not in sql, title


# -- a real Prometheus ---------------------------------------------------------------------
@contextmanager
def prometheus(workdir: Path, worker_port: int) -> Iterator[str]:
    """A Prometheus on a free loopback port scraping the worker every second, with the
    project's alert rules evaluated every second; its base URL."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{worker_port}"],
                        "labels": {"namespace": "voicemon", "pod": "voicemon-worker-0"},
                    }
                ],
            }
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            assert process.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus not ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def api(url: str, path: str, **form: str) -> dict[str, Any]:
    """One Prometheus HTTP API call (POST when it has parameters); its JSON, errors included."""
    data = urllib.parse.urlencode(form).encode() if form else None
    try:
        with urllib.request.urlopen(f"{url}{path}", data=data, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
    return body


def instant(url: str, expr: str) -> dict[str, Any]:
    return api(url, "/api/v1/query", query=expand_promql(expr))


def wait_until(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout_s}s"
        time.sleep(0.5)


def publish_mix(pipeline: Pipeline, mix: LoadMix, starts_ms: list[int], keys: int = 8) -> None:
    """The mix's messages for artifacts starting at ``starts_ms``, keyed by artifact so each
    artifact's events share a partition; malformed bytes travel with the artifact before them."""
    by_key: dict[bytes, list[bytes | dict[str, Any]]] = {}
    key = b"k0"
    for message in mix.stream(iter(starts_ms)):
        if isinstance(message, dict):
            key = f"k{int(message['artifact_id'].rsplit('-', 1)[1]) % keys}".encode()
        by_key.setdefault(key, []).append(message)
    for key, messages in by_key.items():
        pipeline.publish(messages, key)


JWT_SECRET = "dashboards-test-secret-of-at-least-32-bytes"


def use_the_api(port: int, settings: Settings) -> None:
    """A few query API requests on the worker's embedded API: answered ones and a 401."""
    token = mint(JWT_SECRET, "dashboards", staff=True, organization_id=None, ttl_s=600)
    now = int(time.time() * 1000)
    paths = [
        "/v1/metrics/realtime",
        f"/v1/metrics/history?period=hourly&start={now - 6 * HOUR_MS}&end={now}",
        f"/v1/metrics/stages?period=hourly&start={now - 6 * HOUR_MS}&end={now}",
    ]
    base = f"http://{settings.api_bind}:{port}"
    deadline = time.monotonic() + 60
    for path in paths:
        while True:
            headers = {"Authorization": f"Bearer {token}"}
            request = urllib.request.Request(base + path, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
                    break
            except OSError:  # the API starts with the worker's first agent
                assert time.monotonic() < deadline, f"{path} not answered"
                time.sleep(0.5)
    try:
        urllib.request.urlopen(base + paths[0], timeout=10)
        raise AssertionError("a request without a token was answered")
    except urllib.error.HTTPError as error:
        assert error.code == 401


@needs_prometheus
def test_every_live_panel_and_alert_rule_evaluates_on_a_real_prometheus(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    api_port = free_port()
    worker = pipeline.start_worker(
        **FAST_CLOSER,
        VOICEMON_API_ENABLED="true",
        VOICEMON_API_PORT=str(api_port),
        VOICEMON_JWT_SECRET=JWT_SECRET,
    )
    with prometheus(tmp_path, worker.web_port) as url:  # type: ignore[attr-defined]

        def worker_scraped() -> bool:
            return bool(instant(url, "voicemon_worker_info == 1")["data"]["result"])

        wait_until("worker scraped by prometheus", worker_scraped, 60)
        mix = LoadMix(
            seed=11, organizations=20, stages=DEFAULT_STAGES, duplicate_share=0.01,
            malformed_share=0.02,
        )  # fmt: skip
        for _ in range(5):  # traffic spread over several scrapes, so rates have slopes
            now = int(time.time() * 1000)
            publish_mix(pipeline, mix, [now - i * 10 for i in range(150)])
            time.sleep(1)
        pipeline.wait_consumed(60)
        assert all(end > 0 for end in pipeline.end_offsets(pipeline.settings.events_topic).values())
        use_the_api(api_port, pipeline.settings)

        core: dict[str, list[str]] = {}
        for title, expr in dashboard_promql():
            if title in CORE_LIVE_PANELS:
                core.setdefault(title, []).append(expr)
        assert set(core) == set(CORE_LIVE_PANELS)

        def panels_without_data() -> set[str]:
            return {
                title
                for title, exprs in core.items()
                if not any(instant(url, expr)["data"]["result"] for expr in exprs)
            }

        wait_until("data on every core panel", lambda: not panels_without_data(), 40)

        expressions = dashboard_promql() + rules_promql()
        failures = {}
        for name, expr in expressions:
            answer = instant(url, expr)
            if answer.get("status") != "success":
                failures[name] = (expr, answer.get("error"))
        assert not failures, failures

        throughput = instant(url, core["Throughput by event type"][0])
        event_types = {s["metric"]["event_type"] for s in throughput["data"]["result"]}
        assert {"artifact_received", "stage_completed", "artifact_completed"} <= event_types
        quantiles = core["End-to-end latency quantiles"]
        p95 = instant(url, next(e for e in quantiles if "0.95" in e))["data"]["result"]
        assert any(math.isfinite(float(sample["value"][1])) for sample in p95)

        def rules_evaluated() -> bool:
            groups = api(url, "/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return bool(rules) and all(rule["health"] != "unknown" for rule in rules)

        wait_until("one evaluation of every rule", rules_evaluated, 15)
        groups = api(url, "/api/v1/rules")["data"]["groups"]
        expected = yaml.safe_load(ALERT_RULES.read_text())["groups"]
        assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in expected)
        unhealthy = {
            rule["name"]: rule.get("lastError")
            for group in groups
            for rule in group["rules"]
            if rule["health"] != "ok"
        }
        assert not unhealthy, unhealthy
        assert sum(len(g["rules"]) for g in groups) == len(rules_promql())


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run deploy/local/install.sh")
    return found


def test_alert_rules_pass_promtool() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(ALERT_RULES)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


WORKER = f'job="{SCRAPE_JOB}",instance="w:6066"'
INFO = f'voicemon_worker_info{{{WORKER},role="all",consumer_group="voicemon"}}'
LAG = 'voicemon_consumer_lag_messages{consumer_group="voicemon",partition="0"}'
COMMITTED = 'voicemon_consumer_committed_messages_total{consumer_group="voicemon",partition="0"}'
API = 'voicemon_api_requests_total{route="/v1/metrics/history"'
API_BUCKET = 'voicemon_api_request_seconds_bucket{route="/v1/metrics/history"'
COMPLETED = 'voicemon_events_total{event_type="artifact_completed",stage=""}'
FAILED = 'voicemon_events_total{event_type="artifact_failed",stage=""}'
BUCKET = "voicemon_end_to_end_latency_seconds_bucket"
INSERT = "voicemon_clickhouse_insert_seconds_bucket"
HOURLY = 'voicemon_snapshots_emitted_total{period_type="hourly"}'
# (alert, series at one sample a minute, expected result at minute 180): each threshold
# crossed, and the quiet cases (no traffic, a young worker) that must not fire.
ALERT_CASES: list[tuple[str, dict[str, str], list[tuple[str, float]]]] = [
    ("VoicemonArtifactFailureRateHigh", {COMPLETED: "0+60x200", FAILED: "0+20x200"},
     [("{}", 0.25)]),
    ("VoicemonArtifactFailureRateHigh", {COMPLETED: "0+60x200", FAILED: "0+10x200"}, []),
    ("VoicemonArtifactFailureRateHigh", {COMPLETED: "0x200", FAILED: "0x200"}, []),
    ("VoicemonEndToEndLatencyP95High",
     {f'{BUCKET}{{le="{le}"}}': "0x200" for le in ("60", "120", "300")}
     | {f'{BUCKET}{{le="{le}"}}': "0+10x200" for le in ("600", "3600", "+Inf")},
     [("{}", 585)]),
    ("VoicemonDeadLetterRateHigh",
     {'voicemon_events_rejected_total{reason="invalid_json"}': "0+12x200", COMPLETED: "0+588x200"},
     [("{}", 0.02)]),
    ("VoicemonDeadLetterRateHigh",
     {'voicemon_events_rejected_total{reason="invalid_json"}': "0+1x200", COMPLETED: "0+999x200"},
     []),
    ("VoicemonDeadLetterRateHigh", {'voicemon_events_rejected_total{reason="x"}': "0+5x200"},
     [("{}", 1)]),
    ("VoicemonConsumerLagHigh",
     {'voicemon_consumer_lag_messages{partition="0"}': "20000x200",
      'voicemon_consumer_lag_messages{partition="1"}': "10x200"},
     [('{partition="0"}', 20000)]),
    ("VoicemonIngestStalled", {LAG: "500x200", COMMITTED: "100x200"},
     [('{consumer_group="voicemon",partition="0"}', 500)]),
    ("VoicemonIngestStalled", {LAG: "500x200"},  # never committed
     [('{consumer_group="voicemon",partition="0"}', 500)]),
    ("VoicemonIngestStalled", {LAG: "500x200", COMMITTED: "0+10x200"}, []),
    ("VoicemonIngestStalled", {LAG: "0x200", COMMITTED: "100x200"}, []),
    ("VoicemonClickHouseInsertSlow",
     {f'{INSERT}{{le="{le}"}}': "0x200" for le in ("0.5", "1", "2.5")}
     | {f'{INSERT}{{le="{le}"}}': "0+4x200" for le in ("5", "10", "+Inf")},
     [("{}", 4.875)]),
    ("VoicemonClickHouseInsertSlow",
     {f'{INSERT}{{le="{le}"}}': "0+4x200" for le in ("0.05", "2.5", "5", "+Inf")}, []),
    ("VoicemonWatermarkLagHigh", {"voicemon_watermark_lag_seconds": "6000x200"}, [("{}", 6000)]),
    ("VoicemonWatermarkLagHigh", {"voicemon_watermark_lag_seconds": "600x200"}, []),
    ("VoicemonHourlySnapshotsStalled",
     {f"process_start_time_seconds{{{WORKER}}}": "0x200", INFO: "1x200", HOURLY: "48x200"},
     [("{}", 0)]),
    ("VoicemonHourlySnapshotsStalled",
     {f"process_start_time_seconds{{{WORKER}}}": "0x200", INFO: "1x200"}, [("{}", 0)]),
    ("VoicemonHourlySnapshotsStalled",
     {f"process_start_time_seconds{{{WORKER}}}": "0x200", INFO: "1x200", HOURLY: "0+1x200"},
     []),
    ("VoicemonHourlySnapshotsStalled",
     {f"process_start_time_seconds{{{WORKER}}}": "9000x200", INFO: "1x200", HOURLY: "48x200"},
     []),
    ("VoicemonHourlySnapshotsStalled",  # no worker: the API's uptime does not count
     {'process_start_time_seconds{job="x",instance="api:8000"}': "0x200", HOURLY: "48x200"},
     []),
    ("VoicemonWorkerDown", {f"up{{{WORKER}}}": "0x200", INFO: "1x10 _x190"},
     [(f"up{{{WORKER}}}", 0)]),
    ("VoicemonWorkerDown", {f"up{{{WORKER}}}": "1x200", INFO: "1x200"}, []),
    ("VoicemonWorkerDown", {'up{job="x",instance="api:8000"}': "0x200"}, []),  # not a worker
    ("VoicemonNoWorkerUp", {f"up{{{WORKER}}}": "0x200", INFO: "1x10 _x190"}, [("{}", 1)]),
    ("VoicemonNoWorkerUp", {f"up{{{WORKER}}}": "1x200", INFO: "1x200"}, []),
    ("VoicemonNoEventsReceived", {'voicemon_input_messages_total{partition="0"}': "500x200"},
     [("{}", 0)]),
    ("VoicemonNoEventsReceived", {INFO: "1x200"}, [("{}", 0)]),  # the broker cannot tell
    ("VoicemonNoEventsReceived",
     {'voicemon_input_messages_total{partition="0"}': "500x200",
      'voicemon_input_messages_total{partition="1"}': "0+1x200"}, []),
    ("VoicemonIngestPaused",
     {'voicemon_ingest_paused{dependency="redis"}': "1x200",
      'voicemon_ingest_paused{dependency="clickhouse"}': "0x200"},
     [('{dependency="redis"}', 1)]),
    ("VoicemonIngestPaused", {'voicemon_ingest_paused{dependency="redis"}': "0x200"}, []),
    ("VoicemonNoCloserLeader",
     {'voicemon_closer_leader{instance="a"}': "0x200",
      'voicemon_closer_leader{instance="b"}': "0x200"}, [("{}", 0)]),
    ("VoicemonNoCloserLeader",
     {'voicemon_closer_leader{instance="a"}': "0x200",
      'voicemon_closer_leader{instance="b"}': "1x200"}, []),
    ("VoicemonApiErrorRateHigh",
     {f'{API},status="200"}}': "0+90x200", f'{API},status="503"}}': "0+10x200"}, [("{}", 0.1)]),
    ("VoicemonApiErrorRateHigh",
     {f'{API},status="200"}}': "0+99x200", f'{API},status="503"}}': "0+1x200",
      'voicemon_api_requests_total{route="/readyz",status="503"}': "0+50x200"}, []),
    ("VoicemonApiLatencyP95High",
     {f'{API_BUCKET},le="1"}}': "0x200", f'{API_BUCKET},le="2.5"}}': "0+10x200",
      f'{API_BUCKET},le="+Inf"}}': "0+10x200"},
     [("{}", 2.425)]),
    ("VoicemonApiLatencyP95High",
     {f'{API_BUCKET},le="0.1"}}': "0+10x200", f'{API_BUCKET},le="1"}}': "0+10x200",
      f'{API_BUCKET},le="+Inf"}}': "0+10x200"}, []),
]  # fmt: skip


def test_alert_expressions_fire_on_their_thresholds_and_stay_quiet_otherwise(
    tmp_path: Path,
) -> None:
    rules = {name.split("/")[1]: expr for name, expr in rules_promql()}
    assert {alert for alert, _, _ in ALERT_CASES} == set(rules)
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "promql_expr_test": [
                {
                    "expr": rules[alert],
                    "eval_time": "180m",
                    "exp_samples": [{"labels": labels, "value": v} for labels, v in expected],
                }
            ],
        }
        for alert, series, expected in ALERT_CASES
    ]
    unit = tmp_path / "alerts_test.yml"
    unit.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    done = subprocess.run([promtool(), "test", "rules", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the history dashboard on the embedded ClickHouse ---------------------------------------
def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def wait_for_hours(pipeline: Pipeline, hours: list[int], received: int, timeout_s: float) -> None:
    """Until the snapshots topic holds a platform row with ``received`` artifacts per hour."""
    wanted = {f"hourly:platform::{iso(hour)}" for hour in hours}
    deadline = time.monotonic() + timeout_s
    while True:
        latest = {key: value for key, value in pipeline.snapshot_records() if key in wanted}
        if len(latest) == len(wanted) and all(
            value["artifacts_received"] == received for value in latest.values()
        ):
            return
        assert time.monotonic() < deadline, f"hourly snapshots not emitted: {latest}"
        time.sleep(1)


def test_every_history_query_returns_rows_from_worker_snapshots(pipeline: Pipeline) -> None:
    now = int(time.time() * 1000)
    hours = [now - now % HOUR_MS - 4 * HOUR_MS, now - now % HOUR_MS - 3 * HOUR_MS]
    per_hour = 40
    mix = LoadMix(seed=5, organizations=4, stages=DEFAULT_STAGES, malformed_share=0.01)
    starts = [hour + 5 * 60_000 + i * 60_000 for hour in hours for i in range(per_hour)]
    publish_mix(pipeline, mix, starts)
    pipeline.start_worker(**FAST_CLOSER)
    pipeline.wait_consumed(60)
    wait_for_hours(pipeline, hours, per_hour, 60)
    pipeline.stop_workers()

    queries = history_sql()
    empty = {}
    for title, sql in queries:
        rows = pipeline.sql(expand_sql(sql, "hourly"))
        if not rows:
            empty[title] = sql
    assert not empty, f"no rows from: {sorted(empty)}"


def day_of_events(day: int) -> list[RawRow]:
    """Raw events of two hours of ``day``: three organizations, every stage, latencies, cost."""
    events: list[PipelineEvent] = []
    for hour in (day + 20 * HOUR_MS, day + 22 * HOUR_MS):
        for n, org in enumerate(("org-a", "org-b", "org-c")):
            at, art = hour + n * 60_000, f"art-{hour}-{n}"
            events.append(PipelineEvent(f"{art}-r", EventType.ARTIFACT_RECEIVED, at, art, org))
            for stage in DEFAULT_STAGES:
                events.append(PipelineEvent(f"{art}-{stage}", EventType.STAGE_COMPLETED, at + 1,
                                            art, org, stage, duration_ms=1_000.0 + n))  # fmt: skip
            failed = n == 2
            kind = EventType.ARTIFACT_FAILED if failed else EventType.ARTIFACT_COMPLETED
            events.append(PipelineEvent(f"{art}-done", kind, at + 2, art, org,
                                        duration_ms=None if failed else 9_000.0,
                                        ai_cost_usd=0.25))  # fmt: skip
    return [RawRow(event, Position(0, offset, 0)) for offset, event in enumerate(events)]


def test_every_history_query_returns_daily_rows_of_a_closed_day(
    pipeline: Pipeline, clean_store: Client, now_ms: int
) -> None:
    """The daily view: yesterday's snapshots, closed by the worker's own closer (built as the
    worker builds it, its clock at ``now_ms``) from that day's raw events."""
    day = now_ms - now_ms % DAY_MS - DAY_MS
    RawWriter(clean_store).write(day_of_events(day))

    async def close_everything_due() -> list[str]:
        redis = AsyncRedis.from_url(pipeline.env["VOICEMON_REDIS_URL"])
        try:
            closer = build_closer(pipeline.settings, WindowState(redis), clean_store,
                                  pipeline.publisher, clock=lambda: now_ms / 1000)  # fmt: skip
            emitted: list[str] = []
            while report := (await closer.tick()).emitted:
                emitted += report
            return emitted
        finally:
            await redis.aclose()

    assert f"daily:{day}" in asyncio.run(close_everything_due())
    empty = {}
    for title, sql in history_sql():
        if not clean_store.query(expand_sql(sql, "daily")).result_rows:
            empty[title] = sql
    assert not empty, f"no daily rows from: {sorted(empty)}"
