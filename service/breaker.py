"""A circuit breaker: pure state logic with an injectable clock.

Closed: calls go through and consecutive failures are counted. Open: calls are
refused at once, so a dead dependency costs nothing instead of a timeout. After
``reset_timeout`` one call, the probe, is let through (half-open): its success
closes the breaker, its failure opens it again. A probe that has not reported
after ``probe_timeout`` (by default the reset timeout) is no longer waited on, and
another is let through: its caller may have vanished, or it may be stuck where a newer
one would not be (a proxy's old process, retrying a dead server). A probe timeout longer
than the reset keeps a silent dependency from getting a new probe every reset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    # The values are what the breaker_state gauge exports.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_timeout: float,
        probe_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout < 0:
            raise ValueError("reset_timeout must be >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.probe_timeout = reset_timeout if probe_timeout is None else max(probe_timeout, reset_timeout)
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow_request(self) -> bool:
        """Say whether a call may go to the dependency now; a True may be the probe."""
        if self._state is BreakerState.CLOSED:
            return True  # the hot path: no clock read
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_timeout:
                return False
            self._set_state(BreakerState.HALF_OPEN)
            self._probe_started_at = now
            return True
        # Half-open: one probe at a time. A probe whose caller vanished (a
        # cancelled request never reports) must not wedge the breaker, so a new
        # probe is allowed once the old one is older than the probe timeout.
        if self._probe_started_at is not None and now - self._probe_started_at < self.probe_timeout:
            return False
        self._probe_started_at = now
        return True

    def record_success(self) -> None:
        if self._state is BreakerState.CLOSED and not self._failures:
            return  # the hot path: nothing to reset
        self._failures = 0
        self._probe_started_at = None
        if self._state is not BreakerState.CLOSED:
            self._set_state(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._open()

    def retry_after(self) -> int:
        """Whole seconds until the next probe may go through, at least 1 (for Retry-After)."""
        if self._state is BreakerState.OPEN:
            remaining = self.reset_timeout - (self._clock() - self._opened_at)
            return max(1, math.ceil(remaining))
        return 1

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_started_at = None
        if self._state is not BreakerState.OPEN:
            self._set_state(BreakerState.OPEN)

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(self.name, state)
