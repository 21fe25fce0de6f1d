"""Polling with a deadline: the only way the harness waits for a state."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception, retry_if_result, stop_after_delay, wait_fixed

from .errors import LabError
from .phases import phase

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
    stays down), so that the window is watched rather than slept through; the test's ledger
    counts it as the phase "fault held".

    The last probe starts when the window ends, not an interval after a probe that ended
    past it: a slow probe (a connection left to time out through a partition) would
    otherwise stretch the fault by its own length plus an interval."""
    retrying = Retrying(stop=stop_after_delay(seconds), retry=retry_if_result(bool),
                        wait=lambda state: max(0.0, min(interval, seconds - state.seconds_since_start)),
                        retry_error_callback=lambda _: _HELD)
    with phase("fault held"):
        return retrying(probe) is _HELD


_HELD = object()
