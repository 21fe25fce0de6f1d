"""Observers that run beside a scenario's workload: a probe polled in a thread, its answers kept
with their times, and the questions scenarios ask of them afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Sampler:
    """Polls ``probe`` every ``interval`` in a thread; keeps (monotonic time, answer) samples."""

    probe: Callable[[], object]
    interval: float = 0.05
    samples: list[tuple[float, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.probe()
            except Exception as exc:  # an observer never stops the scenario
                answer = f"error: {type(exc).__name__}"
            self.samples.append((time.monotonic(), answer))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(5)


def first(samples, wanted, after: float) -> float | None:
    """The time of the first sample from ``after`` on that answered ``wanted``, or None."""
    return next((at for at, answer in samples if at >= after and answer == wanted), None)


def last(samples, wanted, after: float) -> float | None:
    """The time of the last sample from ``after`` on that answered ``wanted``, or None."""
    return max((at for at, answer in samples if at >= after and answer == wanted), default=None)
