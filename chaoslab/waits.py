"""Polling with a deadline: the only way the harness waits for a state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception, retry_if_result, stop_after_delay, wait_fixed

from .errors import LabError

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    *,
    service: str,
    expected: str,
    timeout: float = 20.0,
    interval: float = 0.05,
    log: Path | str | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value without raising; return that value.

    Exceptions raised by the probe count as "not yet", except a LabError: a probe
    raises one when waiting longer cannot help (the server exited), and it ends the
    wait at once. When the deadline passes, a LabError names the service, the
    expectation and the log, with the last error seen.
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_exception(lambda error: not isinstance(error, LabError))
        | retry_if_result(lambda value: not value),
    )
    try:
        return retrying(probe)
    except RetryError as exc:
        last = exc.last_attempt
        cause = f"it was still not so after {timeout:g}s"
        if last.failed:
            error = last.exception()
            first_line = (str(error).strip().splitlines() or [""])[0]
            cause += f" (last error: {type(error).__name__}: {first_line})"
        else:
            cause += f" (last answer: {last.result()!r})"
        raise LabError(service, expected, log, cause) from None


def holds_for(probe: Callable[[], object], *, seconds: float, interval: float = 0.1) -> bool:
    """Poll ``probe`` for ``seconds``: True if it stayed truthy all along, False as soon as it
    is not. For a state that must last a fault's whole length (nothing gets through, a server
    stays down), so that the window is watched rather than slept through.

    The last probe starts when the window ends, not an interval after a probe that ended
    past it: a slow probe (a connection left to time out through a partition) would
    otherwise stretch the fault by its own length plus an interval."""
    deadline = time.monotonic() + seconds
    while True:
        if not probe():
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(interval, remaining))
