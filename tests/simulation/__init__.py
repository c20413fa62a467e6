"""A deterministic simulation of the ingest core over virtual time (issue 16).

``schedule`` generates an arrival schedule from a seed (pure), ``oracle`` computes what the
contract expects of it with the independent reference (``tests.reference``, no voicemon
code), ``driver`` runs it through the real ``Ingest`` and ``WindowCloser`` against a real
redis-server and the real embedded store with an injected virtual clock, and compares.
``python -m tests.simulation`` is the long mode; docs/reliability.md says what it covers.
"""
