"""The short soak-and-fault run: every fault kind once or more, numbers still exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.run import FAULTS, run
from voicemon.settings import Settings


@pytest.mark.timeout(1500)
def test_every_fault_kind_leaves_every_number_exact(stack: Settings, tmp_path: Path) -> None:
    report = run(stack, tmp_path, events=40_000, seed=5, fault_seconds=5, kills=5, log=print)
    assert sorted(set(report.faults)) == sorted(FAULTS) and report.faults.count("kill") == 5
    assert report.late_events > 0 and report.malformed > 0
    assert report.lost and report.exact, (report.lost, report.double_counted)
