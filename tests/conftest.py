"""Every test process and child gets default signal handling, however pytest was started.

A process started in the background by a non-interactive shell inherits SIGINT and SIGQUIT
as ignored, and ignored signals stay ignored across exec: a child a test interrupts would
never stop. Handled here once, before any test starts a child."""

from __future__ import annotations

import signal

signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
