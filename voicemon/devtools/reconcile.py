"""The demo's books, pure: what the load generator published against what the system kept.

Every message the generator publishes ends in exactly one place: an event counted once (a
raw row), a duplicate of an earlier event (counted nowhere), or a rejection (a DLQ message).
So ``published = counted + duplicates + rejected`` — ``Reconciliation`` says whether that
holds and, when it does not, the likely reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from voicemon.devtools.loadgen import Published


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """What a worker reports on /metrics: events counted once, duplicates, rejections."""

    counted: int = 0
    duplicates: int = 0
    rejected: int = 0

    @property
    def consumed(self) -> int:
        return self.counted + self.duplicates + self.rejected


def worker_counts(metrics_text: str) -> WorkerCounts:
    """The counters of CONTRACT §8 that the books need, summed over their labels."""
    totals = {"voicemon_events": 0.0, "voicemon_events_duplicate": 0.0,
              "voicemon_events_rejected": 0.0}  # fmt: skip
    for family in text_string_to_metric_families(metrics_text):
        if family.name in totals:
            totals[family.name] += sum(
                sample.value for sample in family.samples if sample.name.endswith("_total")
            )
    return WorkerCounts(
        int(totals["voicemon_events"]),
        int(totals["voicemon_events_duplicate"]),
        int(totals["voicemon_events_rejected"]),
    )


@dataclass(frozen=True, slots=True)
class Reconciliation:
    published: Published
    counted: int  # raw rows of this run's artifacts
    rejected: int  # messages the DLQ gained during the run
    worker: WorkerCounts | None  # the worker's own view, if it could be read
    caught_up: bool  # the worker had judged everything published before it was stopped
    waited_s: float

    @property
    def difference(self) -> int:
        """published - (counted + duplicates + rejected); 0 when the books balance."""
        return self.published.total - (self.counted + self.published.duplicates + self.rejected)

    @property
    def holds(self) -> bool:
        return self.difference == 0

    def reasons(self) -> list[str]:
        """Why the books do not balance (empty when they do)."""
        if self.holds:
            return []
        found = []
        if not self.caught_up:
            found.append(f"the worker had not judged every message after {self.waited_s:g} s")
        worker = self.worker
        if worker is not None and worker.duplicates != self.published.duplicates:
            found.append(f"the worker saw {worker.duplicates:,} duplicates, the generator "
                         f"injected {self.published.duplicates:,}")  # fmt: skip
        if self.rejected != self.published.malformed:
            found.append(f"the DLQ gained {self.rejected:,} messages for "
                         f"{self.published.malformed:,} malformed ones published")  # fmt: skip
        if worker is not None and worker.counted != self.counted:
            found.append(f"{self.counted:,} raw rows, but the worker counted "
                         f"{worker.counted:,} events")  # fmt: skip
        return found or ["unknown: compare the worker log with the DLQ (voicemon dlq inspect)"]

    def rows(self) -> list[tuple[str, int, str]]:
        """(line, count, where it comes from), for the table."""
        sent = self.published
        return [
            ("published events", sent.events, "load generator"),
            ("published malformed messages", sent.malformed, "load generator"),
            ("published", sent.total, "events + malformed"),
            ("counted", self.counted, "raw rows of this run's artifacts"),
            ("duplicates", sent.duplicates, "injected by the load generator"),
            ("rejected", self.rejected, "messages the DLQ gained"),
            ("difference", self.difference, "published - counted - duplicates - rejected"),
        ]

    def verdict(self) -> str:
        sent = self.published
        books = (f"published {sent.total:,} = counted {self.counted:,} + duplicates "
                 f"{sent.duplicates:,} + rejected {self.rejected:,}")  # fmt: skip
        if self.holds:
            return f"reconciled: {books}"
        return (f"not reconciled, off by {self.difference:,}: {books.replace(' = ', ' vs ')}; "
                + "; ".join(self.reasons()))  # fmt: skip
