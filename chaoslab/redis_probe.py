"""The harness' Redis client: one attempt per call, a short timeout.

redis-py retries failed commands by default (three times, with backoff). A probe
that must say "not yet" quickly, or a check of a frozen server, wants no retries:
the harness' own wait_until does the retrying, under its deadline.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .topology import Endpoint


def client(endpoint: Endpoint, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(host=endpoint.host, port=endpoint.port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True, retry=Retry(NoBackoff(), 0))


def ping(endpoint: Endpoint, timeout: float = 0.5) -> bool:
    """One PING on a fresh connection, closed afterwards: a readiness probe for redis-server or Sentinel."""
    connection = client(endpoint, timeout=timeout)
    try:
        return connection.ping()
    finally:
        connection.close()
