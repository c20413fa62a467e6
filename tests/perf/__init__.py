"""Benchmarks, not part of ``make test``: ``make bench`` runs ``python -m tests.perf.ingest``."""
