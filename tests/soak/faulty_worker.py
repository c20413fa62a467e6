"""``python -m tests.soak.faulty_worker``: the real worker with an injectable store fault.

The embedded ClickHouse engine cannot be stopped from outside its process, so the fault is
injected in-process: every store call first reads the control file named by
``VOICEMON_FAULT_FILE``. ``fail`` makes the call raise; ``hang`` makes it wait until the file
says otherwise; anything else lets it through. Nothing of this is in the shipped code.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from voicemon import store

CONTROL = Path(os.environ.get("VOICEMON_FAULT_FILE", "/nonexistent"))
_connect = store.connect


def _mode() -> str:
    try:
        return CONTROL.read_text().strip()
    except OSError:
        return ""


class FaultyStore:
    """The real client behind a switch."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def _gate(self) -> None:
        while _mode() == "hang":
            time.sleep(0.1)
        if _mode() == "fail":
            raise ConnectionError("injected store failure")

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return self._client.insert(*args, **kwargs)

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return self._client.insert_arrow(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return self._client.query(*args, **kwargs)

    def query_arrow(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return self._client.query_arrow(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        self._gate()
        return self._client.command(*args, **kwargs)


def main() -> None:
    store.connect = lambda dsn: FaultyStore(_connect(dsn))  # type: ignore[assignment]
    from runtime.cli import main as cli

    sys.argv = ["voicemon", "worker"]
    cli()


if __name__ == "__main__":
    main()
