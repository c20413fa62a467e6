"""The pure parts of the benchmarks in tests/perf: what they parse, divide and report."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.redis_topology import aof_arguments
from tests.perf import peer_venv
from tests.perf.freshness import percentile, probe_event
from tests.perf.ingest import (
    _PEER_LINE,
    Kind,
    Result,
    _ratios,
    expected_counts,
    table,
    topology_table,
)
from tests.perf.ingest import parse_args as ingest_args
from tests.perf.realtime import parse_args as realtime_args
from tests.perf.redis_topologies import TopologyError, aof_policy
from voicemon.event import PipelineEvent, validate_event
from voicemon.settings import DEFAULT_STAGES


def test_the_peer_line_is_parsed_as_the_peer_prints_it() -> None:
    source = peer_venv.PEER_SCRIPT.read_text()
    literal = re.search(r'f"quix peer: [^"]*"', source)
    assert literal is not None, "the peer no longer prints its rate line"
    printed = eval(literal.group(0), {}, {"self": SimpleNamespace(done=150_012), "took": 10.114})
    match = _PEER_LINE.search(f"some log\n{printed}\n")
    assert match is not None
    assert (int(match.group(1)), float(match.group(2))) == (150_012, 10.11)


def _result(path: str, events_per_s: float, **extra: object) -> Result:
    return Result("single", path, 1000, 1000, 1000 / events_per_s, extra=dict(extra))


def test_worker_is_divided_by_the_peer_run_with_dedup() -> None:
    results = [
        _result("confluent", 500_000.0),
        _result("faust", 10_000.0),
        _result("peer", 15_000.0),
        _result("peer (no dedup)", 18_000.0),
        _result("worker", 30_000.0),
    ]
    ratios = {result.path: r for result, r in _ratios(results)}
    assert ratios["worker"]["peer"] == pytest.approx(2.0)
    assert ratios["worker"]["faust"] == pytest.approx(3.0)
    assert ratios["peer (no dedup)"]["peer"] == pytest.approx(1.2)
    assert "x peer" in table(results).splitlines()[0]


def test_ratios_are_absent_without_the_reference() -> None:
    [(_, ratios)] = list(_ratios([_result("worker", 30_000.0)]))
    assert ratios == {"confluent": None, "faust": None, "peer": None}


def test_cpu_per_event_from_cores_and_cpu_seconds() -> None:
    result = Result("batch", "worker", 200_000, 400, 10.0, 4.0, extra={"cores": {"redis": 0.1}})
    assert result.cpu_us_per_event == pytest.approx(20.0)  # 4 s of CPU over 200k events
    assert result.redis_us_per_event == pytest.approx(5.0)  # 0.1 core x 10 s over 200k
    bare = Result("batch", "faust", 200_000, 400, 10.0)
    assert (bare.cpu_us_per_event, bare.redis_us_per_event) == (None, None)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (0.5, 0.9, 0.99)] == [50.0, 90.0, 99.0]
    assert percentile([3.0], 0.99) == 3.0


def test_a_probe_is_a_valid_event_alone_in_its_organization() -> None:
    body = probe_event("abc123", "000042", 1_790_000_000_000)
    assert body["organization_id"] == "probe-abc123-000042"
    verdict = validate_event(body, now_ms=1_790_000_000_500, stages=frozenset(DEFAULT_STAGES))
    assert isinstance(verdict, PipelineEvent)
    assert verdict.organization_id == "probe-abc123-000042"


def test_the_peer_venv_is_reused_only_while_its_marker_matches(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    assert not peer_venv.is_ready(venv)
    (venv / peer_venv.MARKER_NAME).write_text(peer_venv.requirement_line() + "\n")
    assert peer_venv.is_ready(venv)
    (venv / peer_venv.MARKER_NAME).write_text("python3.11 quixstreams>=3.20\n")
    assert not peer_venv.is_ready(venv)


def test_the_capacity_formula_rounds_up_at_the_edge_of_a_core() -> None:
    from tests.perf.capacity import UTILISATION, PerEvent, deployment

    # 7 us at 100k events/s is 0.7 core: exactly one worker at U = 0.7; a hair more, two.
    exact = PerEvent(worker_us=7.0, redis_us=7.0, store_us=7.0, worker_rss_mb=512)
    assert UTILISATION == 0.7
    one = deployment(100_000, exact)
    assert (one.workers, one.partitions, one.redis_primaries) == (1, 2, 1)
    over = PerEvent(worker_us=7.01, redis_us=7.01, store_us=7.0, worker_rss_mb=512)
    two = deployment(100_000, over)
    assert (two.workers, two.partitions, two.redis_primaries) == (2, 4, 2)
    # A ClickHouse shard holds 16 cores at U: 11.2 cores of store work, then a second shard.
    assert deployment(1_600_000, exact).clickhouse_shards == 1
    assert deployment(1_600_001, exact).clickhouse_shards == 2
    assert deployment(1_000_000, exact).redis_memory_gb == 218.0
    assert deployment(1, exact).workers == 1  # never zero


@pytest.mark.parametrize(
    ("config", "policy"),
    [
        ({"appendonly": "yes", "appendfsync": "everysec", "save": ""}, "everysec"),
        ({"appendonly": "yes", "appendfsync": "always", "save": ""}, "always"),
        ({"appendonly": "no", "appendfsync": "everysec", "save": ""}, None),
    ],
)
def test_the_cluster_takes_the_single_primarys_aof_policy(
    config: dict[str, str], policy: str | None
) -> None:
    assert aof_policy(config) == policy
    expected = ["--appendonly", "no"] if policy is None else ["--appendonly", "yes"]
    assert aof_arguments(policy)[:2] == expected
    assert aof_arguments(policy)[2:] == ([] if policy is None else ["--appendfsync", policy])


def test_a_single_primary_the_cluster_cannot_match_is_refused() -> None:
    with pytest.raises(TopologyError, match="RDB snapshots"):
        aof_policy({"appendonly": "yes", "appendfsync": "everysec", "save": "3600 1"})
    with pytest.raises(TopologyError, match="appendfsync"):
        aof_policy({"appendonly": "yes", "appendfsync": "sometimes", "save": ""})
    with pytest.raises(ValueError, match="appendfsync"):
        aof_arguments("sometimes")


def test_expected_real_time_counts_per_scope() -> None:
    tally: Counter[Kind] = Counter(
        {
            ("org-a", "artifact_received", None): 3,
            ("org-b", "artifact_received", None): 2,
            ("org-a", "artifact_failed", None): 1,
            ("org-b", "stage_started", "asr"): 4,
            ("org-b", "stage_completed", "asr"): 1,
            (None, "stage_failed", "tts"): 5,
        }
    )
    scopes = expected_counts(tally, ("asr", "tts"))
    assert set(scopes) == {None, "org-a", "org-b"}
    assert scopes[None]["artifacts_received"] == 5
    assert scopes[None]["artifacts_failed"] == 1
    assert scopes[None]["asr"] == {"started": 4, "completed": 1, "failed": 0}
    assert scopes[None]["tts"] == {"started": 0, "completed": 0, "failed": 5}
    assert scopes["org-a"] == {
        "artifacts_received": 3,
        "artifacts_completed": 0,
        "artifacts_failed": 1,
        "asr": {"started": 0, "completed": 0, "failed": 0},
        "tts": {"started": 0, "completed": 0, "failed": 0},
    }
    assert scopes["org-b"]["asr"] == {"started": 4, "completed": 1, "failed": 0}


def test_redis_cpu_per_event_per_shard_sums_to_the_total() -> None:
    cluster = Result("batch", "worker", 10_000, 20, 2.0, extra={
        "redis": "cluster", "redis_shards": 3, "cores": {"redis": 0.03},
        "redis_shard_cores": [0.01, 0.005, 0.015], "read_p99_ms": 1.25,
    })  # fmt: skip
    assert [round(v, 3) for v in cluster.redis_us_per_event_each] == [2.0, 1.0, 3.0]
    assert cluster.redis_us_per_event == pytest.approx(sum(cluster.redis_us_per_event_each))
    line = topology_table([cluster, _result("confluent", 1000.0)]).splitlines()[2:]
    assert len(line) == 1 and "2.00/1.00/3.00" in line[0] and "1.250" in line[0]


@pytest.mark.parametrize(
    ("given", "valid"),
    [("single", True), ("single,cluster", True), ("cluster", True), ("cluster3", False),
     ("", False)],
)  # fmt: skip
def test_the_benchmarks_take_only_known_topologies(given: str, valid: bool) -> None:
    for parse in (ingest_args, realtime_args):
        if valid:
            assert parse(["--redis", given]).redis == given.split(",")
        else:
            with pytest.raises(SystemExit):
                parse(["--redis", given])
