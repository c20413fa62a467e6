"""The Faust app of the voicemon worker and its topics, built from the settings."""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from time import monotonic
from typing import Any

import faust
import mode.loop
from faust.sensors import Monitor

from voicemon.kafka_client import faust_brokers, faust_credentials
from voicemon.settings import Settings


@dataclass(frozen=True, slots=True)
class WorkerApp:
    """The Faust app with the two topics it consumes."""

    app: faust.App
    events_topic: Any
    organizations_topic: Any


# Faust's own cost per message (a single-event message is one Faust event) is cut by the
# three changes below: uvloop, the lean Monitor and the GC thresholds, measured on a bare
# agent and on the worker in docs/faust-overhead.md. None changes what is consumed, acked or
# committed. Faust's other knobs (buffer, fetch and poll sizes, acking modes,
# cython_optimizations, the scheduler) measured within noise.
YOUNG_GC_THRESHOLD = 20_000  # Python's default is 700 container allocations
STREAM_BUFFER_MESSAGES = 2_000  # messages queued ahead of the agent (up to 1 MiB each)


class LeanMonitor(Monitor):
    """Faust's Monitor without its per-message bookkeeping.

    The default Monitor runs four hooks per message (counters, a state dict per event,
    per-stream and per-task lookups) for statistics nothing here reads: the worker's
    metrics are its own Prometheus series. Only ``stream_inbound_time`` is kept, because
    Faust's livelock detector reads it (without it a lagging partition would be logged as an
    idle stream). Installed through Faust's ``Monitor`` setting, so Faust still owns it.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass


def tune_process() -> None:
    """Before the event loop exists: uvloop as asyncio's loop (mode's documented switch;
    Faust hands every message through several tasks, and uvloop runs them in C), and a
    garbage collector that does not stop every 700 allocations (each message allocates
    tasks and futures), with the objects of start-up frozen out of its scans."""
    with contextlib.suppress(ImportError):  # no uvloop here: asyncio's own loop, slower
        mode.loop.use("uvloop")
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD)


def build_app(settings: Settings) -> WorkerApp:
    tune_process()
    app = faust.App(
        settings.worker_group,
        broker=faust_brokers(settings),
        broker_credentials=faust_credentials(settings),  # TLS and SASL (VOICEMON_KAFKA_*)
        autodiscover=False,
        datadir=settings.worker_data_dir,
        topic_partitions=settings.topic_partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # A crashed worker's partitions move after the session timeout; Faust's default (60 s)
        # stalls them a minute, so it is a setting.
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_seconds,
        broker_commit_interval=settings.kafka_commit_interval_seconds,
        # A worker that joins its group while the broker restarts sees its topics missing and
        # is assigned nothing until its next metadata refresh: aiokafka's default is 5 min.
        consumer_metadata_max_age_ms=30_000,
        # Bounded buffering: with a dependency down the agent stops taking, this queue fills and
        # Faust stops fetching instead of holding more messages in memory. A take (up to
        # VOICEMON_BATCH_MAX_MESSAGES) fills from it only while the agent waits for the next.
        stream_buffer_maxsize=STREAM_BUFFER_MESSAGES,
        web_bind=settings.worker_web_bind,
        web_port=settings.worker_web_port,
        web_enabled=True,
        Monitor=LeanMonitor,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}  # fmt: skip
    events = app.topic(settings.events_topic, partitions=settings.topic_partitions, **raw)
    organizations = app.topic(settings.organizations_topic, partitions=1, **raw)
    return WorkerApp(app, events, organizations)
