"""The short soak-and-fault run: every fault kind once or more, numbers still exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.run import FAULTS, faults, run
from voicemon.settings import Settings


@pytest.mark.timeout(900)
def test_every_fault_kind_leaves_every_number_exact(stack: Settings, tmp_path: Path) -> None:
    """The short run of CI: two SIGKILLs (the store worker, then a counting worker) and every
    other fault once. The long run is ``python -m tests.soak.run`` (docs/reliability.md)."""
    report = run(stack, tmp_path, events=12_000, seed=5, fault_seconds=3, kills=2, log=print)
    assert sorted(set(report.faults)) == sorted(FAULTS) and report.faults.count("kill") == 2
    assert report.late_events > 0 and report.malformed > 0
    compared = {"raw rows", "dlq records", "realtime artifacts_received"}
    assert compared <= set(report.lost), report.lost  # every number was compared
    assert report.exact, (report.lost, report.double_counted)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
def test_a_redis_failover_among_the_faults_leaves_every_number_exact(
    stack: Settings, tmp_path: Path, topology: str
) -> None:
    """The short run on a Redis of the harness's own: the Sentinel primary SIGKILLed (a batch
    waits for a replica before its offsets commit), or a Cluster node SIGKILLed and restarted,
    among the other faults."""
    report = run(stack, tmp_path, events=12_000, seed=6, fault_seconds=3, kills=2, log=print,
                 topology=topology)  # fmt: skip
    assert sorted(set(report.faults)) == sorted(faults(topology))
    assert "redis_failover" in report.faults and "redis_restart" not in report.faults
    assert report.exact, (report.lost, report.double_counted)
