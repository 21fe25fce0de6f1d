"""What says a service is ready: it answers its own protocol, not just its port."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis as redis_client

from ..topology import Endpoint


@dataclass(frozen=True)
class Probe:
    """How to tell that a service answers, and what that means, for the message when it never does."""

    answers: Callable[[], bool]
    expected: str


def pong(client: Callable[[], redis_client.Redis], endpoint: Endpoint) -> Probe:
    """Redis answers PING on ``endpoint``, on a connection of its own each try, closed after."""
    def answers() -> bool:
        connection = client()
        try:
            return connection.ping()
        finally:
            connection.close()
    return Probe(answers, f"PONG on {endpoint}")
