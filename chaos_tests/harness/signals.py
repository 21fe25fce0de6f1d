"""Signals for the programs a harness test starts, as a user's terminal would give them."""

from __future__ import annotations

import signal


def interruptible() -> None:
    """In the child, before exec: SIGINT back to its default, as a terminal's foreground job
    has it. A shell without job control starts background commands (a CI script's `&`) with
    SIGINT ignored, and an ignored signal stays ignored across exec: Python would then never
    raise KeyboardInterrupt, and Ctrl-C could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
