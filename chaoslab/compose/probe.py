"""What says a service is ready: it answers its own protocol, not just its port."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import redis_probe
from ..topology import Endpoint


@dataclass(frozen=True)
class Probe:
    """How to tell that a service answers, and what that means, for the message when it never does."""

    answers: Callable[[], bool]
    expected: str


def pong(endpoint: Endpoint) -> Probe:
    """Redis (or a Sentinel) answers PING on ``endpoint``."""
    return Probe(lambda: redis_probe.ping(endpoint, timeout=1.0), f"PONG on {endpoint}")
