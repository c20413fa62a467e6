"""Benchmarks: not part of ``make test``; run with ``make bench`` or ``python -m tests.perf.ingest``."""
