"""The Redis client behind the cache, by setting (REDIS_CLIENT).

``lean`` (default): service.redis_wire, one multiplexed connection, the fast path.
``redis-py``: redis-py's asyncio client with a connection pool, the reference
client, kept for comparison (``make bench``) and for features the lean client does
not have (TLS, unix sockets; Sentinel could plug in here the same way).

Both give the cache the same three calls: ``execute(*args)``,
``execute_many(commands)`` and ``run_script(script, keys, args)``, raise
TimeoutError, ConnectionError (OSError) or a reply error, and never retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.sentinel import Sentinel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from service.redis_wire import Arg, LeanRedis, ReplyError, Script
from service.settings import Settings

logger = logging.getLogger(__name__)

# What a failed Redis call can raise, whichever client.
REDIS_FAILURES = (RedisError, ReplyError, OSError, asyncio.TimeoutError)


class RedisStore(Protocol):
    def execute(self, *args: Arg) -> Awaitable[Any]: ...

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]: ...

    async def run_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any: ...

    async def close(self) -> None: ...


def open_store(settings: Settings) -> RedisStore:
    """Made inside the running loop (the clients bind to it); connects on first use."""
    if settings.redis_sentinels:
        return RedisPyStore(settings, client=_sentinel_master(settings))
    if settings.redis_client == "lean":
        if settings.redis_url.startswith("redis://"):
            return LeanRedis(settings.redis_url, timeout=settings.redis_timeout_s,
                             connect_timeout=settings.redis_timeout_s)
        logger.warning("REDIS_URL is not redis://: the cache uses redis-py instead of the lean client")
    return RedisPyStore(settings)


def _sentinel_master(settings: Settings) -> redis.Redis:
    """A client that asks the Sentinels where the master is on every new connection.

    After a failover the old connections fail (timeout or refused), the breaker
    opens, and its half-open probe opens a new connection: to the new master.
    """
    timeouts = {"socket_timeout": settings.redis_timeout_s, "socket_connect_timeout": settings.redis_timeout_s}
    sentinel = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=dict(timeouts), **timeouts)
    return sentinel.master_for(settings.redis_sentinel_master, retry=Retry(NoBackoff(), 0), **timeouts)


class RedisPyStore:
    """``client``: any redis.asyncio.Redis (a Sentinel's ``master_for(...)``, say);
    by default one made from REDIS_URL."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.client = client if client is not None else redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            # The breaker decides when to try again, not a retry loop inside one request.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        # The socket timeout bounds each read; this bounds a whole call (connect,
        # a script load) in case anything else stalls.
        self._call_timeout = settings.redis_timeout_s * 3

    async def execute(self, *args: Arg) -> Any:
        async with asyncio.timeout(self._call_timeout):
            return await self.client.execute_command(*args)

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        async with asyncio.timeout(self._call_timeout):
            async with self.client.pipeline(transaction=False) as pipe:
                for args in commands:
                    pipe.execute_command(*args)
                return await pipe.execute()

    async def run_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        async with asyncio.timeout(self._call_timeout):
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await self.client.eval(script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        await self.client.aclose()
