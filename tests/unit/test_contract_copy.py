"""The contract the code cites travels with it: docs/contract.md is the team's CONTRACT.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "CONTRACT.md"  # beside every clone of the team's repos


def test_docs_contract_is_the_shared_contract_word_for_word() -> None:
    copy = (ROOT / "docs" / "contract.md").read_text()
    assert copy.startswith("# voicemon — the public contract")
    if SHARED.exists():  # a clone on its own has only the copy, which the lines below check
        assert copy == SHARED.read_text(), "copy ../shared/CONTRACT.md to docs/contract.md"


def test_every_section_the_code_cites_exists_in_the_contract() -> None:
    sections = set(
        re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", (ROOT / "docs" / "contract.md").read_text(), re.M)
    )
    cited: set[str] = set()
    for folder in ("consumers", "aggregators", "voicemon", "runtime"):
        for path in (ROOT / folder).rglob("*.py"):
            cited |= set(re.findall(r"CONTRACT §(\d+(?:\.\d+)?)", path.read_text()))
    assert cited and cited <= sections, sorted(cited - sections)
