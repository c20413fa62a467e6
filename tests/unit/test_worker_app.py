"""The worker's Faust app: the lean Monitor it installs (consumers/app.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

import consumers.app
from consumers.app import LeanMonitor, build_app
from voicemon.settings import Settings

PARTITION = TP("voicemon.events", 2)


def test_lean_monitor_keeps_only_the_inbound_time_faust_reads() -> None:
    monitor = LeanMonitor()
    message = SimpleNamespace(time_in=None)
    monitor.on_message_in(PARTITION, 7, message)
    state = monitor.on_stream_event_in(PARTITION, 7, object(), object())
    monitor.on_stream_event_out(PARTITION, 7, object(), object(), state)
    monitor.on_message_out(PARTITION, 7, message)
    assert state is None
    assert set(monitor.stream_inbound_time) == {PARTITION}  # the livelock detector's input
    assert monitor.messages_received_total == 0
    assert monitor.events_total == 0
    assert monitor.messages_active == 0
    assert message.time_in is None


def test_build_app_installs_the_lean_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    tuned: list[bool] = []
    monkeypatch.setattr(consumers.app, "tune_process", lambda: tuned.append(True))
    worker: Any = build_app(Settings(kafka_bootstrap="127.0.0.1:1"))
    assert tuned == [True]
    assert isinstance(worker.app.monitor, LeanMonitor)
