"""The producer's numbers as Prometheus metrics, for a service that already runs
prometheus-client: ``EventProducer(..., metrics_registry=registry)``. Read at scrape time
from ``EventProducer.stats()``: nothing is counted twice and publishing costs nothing more.
Imported only when a registry is passed in: prometheus-client stays optional
(``pip install voicemon-producer[prometheus]``).

voicemon_producer_events_queued{topic}          gauge: events held now (pending or unanswered)
voicemon_producer_events_queued_bytes{topic}    gauge: their bytes
voicemon_producer_events_sent_total{topic}      counter: acknowledged by the broker
voicemon_producer_events_dropped_total{topic}   counter: dropped by the overflow policy
voicemon_producer_events_failed_total{topic}    counter: refused, timed out or left at close
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from voicemon_producer.producer import ProducerStats


class ProducerCollector(Collector):
    """One producer's numbers, labelled with its topic."""

    def __init__(self, stats: Callable[[], ProducerStats], topic: str) -> None:
        self._stats = stats
        self._topic = topic

    def collect(self) -> Iterator[Metric]:
        now = self._stats()
        for name, kind, value, help_text in (
            ("queued", GaugeMetricFamily, now.queued, "Events held (pending or unanswered)."),
            ("queued_bytes", GaugeMetricFamily, now.queued_bytes, "Bytes of the events held."),
            ("sent", CounterMetricFamily, now.sent, "Events acknowledged by the broker."),
            ("dropped", CounterMetricFamily, now.dropped, "Events dropped: buffer full."),
            ("failed", CounterMetricFamily, now.failed, "Events refused, timed out or unsent."),
        ):
            family = kind(f"voicemon_producer_events_{name}", help_text, labels=["topic"])
            family.add_metric([self._topic], value)
            yield family


def register(registry: CollectorRegistry, stats: Callable[[], ProducerStats], topic: str) -> None:
    registry.register(ProducerCollector(stats, topic))
