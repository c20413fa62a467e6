"""Bad arguments of the DLQ tools and of ``--watch`` end in one sentence, before any service
is touched (so these run in-process, with nothing listening); ``--version``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dlq", "replay"], "say which dead letters to replay: --reason, --since/--until"),
        (["dlq", "replay", "--all", "--patch", "{bad}"], "is not an RFC 6902 JSON patch"),
        (["dlq", "replay", "--all", "--patch", "{none}"], "cannot read the patch file"),
        (["dlq", "replay", "--all", "--patch", "{bad}", "--fixup", "m:f"], "not both"),
        (["dlq", "replay", "--all", "--fixup", "nowhere_module_x:f"], "cannot import"),
        (["dlq", "replay", "--offset", "2"], "expected PARTITION:OFFSET"),
        (["dlq", "tail", "--reason", "missing"], "'missing' is not a reason code"),
        (["dlq", "inspect", "--since", "yesterday"], "--since: expected a duration"),
        (["dlq", "inspect", "--since", "1h", "--until", "2h"], "must not be after --until"),
        (["metrics", "realtime", "5"], "give --watch SECONDS"),
        (["dlq", "replay", "--all", "--patch", "{relative}"], "Location must start with /"),
        (
            ["dlq", "replay", "--all", "--fixup", "{raising}:fix"],
            "raised RuntimeError while loading",
        ),
    ],
)
def test_a_bad_argument_is_one_sentence(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('[{"op": "teleport", "path": "/x"}]')
    (tmp_path / "relative.json").write_text('[{"op": "remove", "path": "stage"}]')
    (tmp_path / "raising.py").write_text('raise RuntimeError("no config")\ndef fix(e): return e\n')
    paths = {"{bad}": str(tmp_path / "bad.json"), "{none}": str(tmp_path / "none.json"),
             "{relative}": str(tmp_path / "relative.json"),
             "{raising}": str(tmp_path / "raising.py")}  # fmt: skip
    for placeholder, path in paths.items():
        args = [arg.replace(placeholder, path) for arg in args]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 1, text
    assert text.startswith("error: ") and message in text, text
    assert "Traceback" not in text
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_version_prints_the_package_version() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    done = subprocess.run([sys.executable, "-m", "runtime", "--version"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"voicemon {pyproject['project']['version']}\n"
    assert done.stderr == ""
