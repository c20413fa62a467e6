"""``voicemon orgs import`` on the real broker and store: the names go to the organizations
topic (the directory's one source of truth) and the store; Excel's UTF-8 with a byte-order
mark reads as UTF-8, Latin-1 is one sentence unless ``--encoding`` says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from tests.integration.harness import Pipeline

ROOT = Path(__file__).resolve().parents[2]
ROWS = "organization_id,name\r\nzrh,Zürich Rückversicherung\r\nmuc,München Ämter\r\n"
EXPECTED = {"zrh": "Zürich Rückversicherung", "muc": "München Ämter"}


def orgs_import(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "orgs", "import", *args],
        cwd=ROOT, env={**os.environ, **pipeline.env}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def directory_topic(pipeline: Pipeline) -> dict[str, str]:
    records = pipeline.read_topic(pipeline.settings.organizations_topic)
    found = {}
    for key, value, _ in records:
        body = orjson.loads(value)
        assert body["organization_id"] == key.decode()
        found[key.decode()] = body["name"]
    return found


def test_a_utf8_csv_with_a_byte_order_mark_goes_to_the_topic_and_the_store(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + ROWS.encode())
    done = orgs_import(pipeline, str(path))
    assert done.returncode == 0, done.stderr
    assert "imported 2 organization(s)" in done.stdout
    assert directory_topic(pipeline) == EXPECTED
    rows = pipeline.sql("SELECT organization_id, name FROM voicemon.organizations FINAL")
    assert {row["organization_id"]: row["name"] for row in rows} == EXPECTED


def test_latin1_is_one_sentence_unless_the_encoding_is_given(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(ROWS.encode("latin-1"))
    refused = orgs_import(pipeline, str(path))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: ") and "is not utf-8 text" in lines[0]
    assert "--encoding latin-1" in lines[0] and "Traceback" not in refused.stderr
    assert directory_topic(pipeline) == {}  # nothing half-imported
    done = orgs_import(pipeline, "--encoding", "latin-1", str(path))
    assert done.returncode == 0, done.stderr
    assert directory_topic(pipeline) == EXPECTED
