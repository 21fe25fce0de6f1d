"""SIGTERM handled as Ctrl-C, so that a run stopped by a supervisor cleans up like one
stopped at the keyboard.

Python's default for SIGTERM is to die on the spot: no ``finally``, no fixture teardown, and
a run's servers, containers and fault proxies stay behind (until the next run reaps them).
CI runners, ``timeout`` and ``kill`` send SIGTERM; a terminal sends SIGINT, which Python
already turns into KeyboardInterrupt. Raising the same exception for SIGTERM gives both the
same clean-up path.
"""

from __future__ import annotations

import os
import signal
import threading

from .rundir import children


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be."""


def terminate_like_ctrl_c(*, pass_on_to_children: bool = False) -> None:
    """Install the handler, unless SIGTERM is already handled (or this is not the main
    thread, where Python cannot install handlers).

    With ``pass_on_to_children`` (pytest-xdist's controller: its only children are its
    workers, and each holds a lab), the SIGTERM is sent on to them before anything else, as a
    terminal's Ctrl-C reaches its whole foreground group. Otherwise a worker hears of it only
    when the controller closes its channel, and execnet interrupts it 5 s after that; its
    teardown then had about 5 s before the controller kills it (xdist waits 10 s in all)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _terminated(signum, frame):
        if pass_on_to_children:
            for pid in children(os.getpid()):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        raise Terminated(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _terminated)
