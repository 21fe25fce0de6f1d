"""SIGTERM handled as Ctrl-C, so that a run stopped by a supervisor cleans up like one
stopped at the keyboard.

Python's default for SIGTERM is to die on the spot: no ``finally``, no fixture teardown, and
a run's servers, containers and fault proxies stay behind (until the next run reaps them).
CI runners, ``timeout`` and ``kill`` send SIGTERM; a terminal sends SIGINT, which Python
already turns into KeyboardInterrupt. Raising the same exception for SIGTERM gives both the
same clean-up path.
"""

from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be."""


def terminate_like_ctrl_c() -> None:
    """Install the handler, unless SIGTERM is already handled (or this is not the main
    thread, where Python cannot install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _terminated(signum, frame):
        raise Terminated(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _terminated)
