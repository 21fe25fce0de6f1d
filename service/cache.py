"""Cache-aside on Redis for single products, behind a circuit breaker.

Keys: ``product:{id}`` holds the product's JSON; ``product:{id}:lsn`` (stale-fill
guard only) holds the WAL position, as a decimal integer, of the last write to it.

Redis being slow or gone never fails a request: every call is bounded by
REDIS_TIMEOUT_MS and, once the breaker is open, skipped. An invalidation that
cannot reach Redis is remembered and replayed before the cache is used again, so
a paused Redis that comes back cannot serve a value overwritten meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.breaker import CircuitBreaker
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)

LookupResult = Literal["hit", "miss", "error", "bypass"]

# Invalidations waiting for Redis; beyond this many the oldest are dropped (and
# those keys may serve an old value until their TTL ends).
_MAX_PENDING_INVALIDATIONS = 10_000

# Lua, so that reading the marker and writing the value are one atomic step.
# Positions are decimal strings compared exactly: longer is larger, then lexically.
_NEWER_OR_EQUAL = """
local function at_least(a, b)
  if #a ~= #b then return #a > #b end
  return a >= b
end
"""

# KEYS: value, marker. ARGV: payload, ttl, position of the data, strict ('1': the
# data must be strictly newer than the marker, for data read on a primary whose
# position can equal a write's that its snapshot did not see yet).
_FILL_IF_NOT_STALE = (
    _NEWER_OR_EQUAL
    + """
local marker = redis.call('GET', KEYS[2])
if marker then
  local ok = at_least(ARGV[3], marker)
  if ok and ARGV[4] == '1' and ARGV[3] == marker then ok = false end
  if not ok then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
)

# KEYS: value, marker. ARGV: position of the write, marker ttl. Keep the largest
# marker (writes may finish out of order), then drop the value.
_MARK_AND_INVALIDATE = (
    _NEWER_OR_EQUAL
    + """
local marker = redis.call('GET', KEYS[2])
if (not marker) or at_least(ARGV[1], marker) then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
"""
)

_REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


def value_key(product_id: int) -> str:
    return f"product:{product_id}"


def marker_key(product_id: int) -> str:
    return f"product:{product_id}:lsn"


@dataclass(frozen=True)
class Lookup:
    result: LookupResult
    payload: bytes | None = None
    # Position of the last write to this key, when the guard is on and one is known.
    marker: int | None = None

    @property
    def header(self) -> str:
        """X-Cache: an error is a bypass from the client's point of view."""
        return "bypass" if self.result in ("error", "bypass") else self.result


class ProductCache:
    def __init__(self, settings: Settings, metrics: Metrics, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.enabled = settings.cache_enabled
        self._guard = settings.stale_fill_guard
        self._ttl = settings.cache_ttl_seconds
        self._marker_ttl = settings.lsn_marker_ttl_seconds
        # redis-py's socket timeout bounds each read; this bounds a whole call
        # (connect, a script reload, a pending flush) in case anything else stalls.
        self._call_timeout = settings.redis_timeout_s * 3
        self._metrics = metrics
        # product id -> (write position, sequence number) of invalidations not yet done.
        self._deferred: dict[int, tuple[int | None, int]] = {}
        self._sequence = 0
        self.client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            # The breaker decides when to try again, not a retry loop inside one request.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._fill_script = self.client.register_script(_FILL_IF_NOT_STALE)
        self._invalidate_script = self.client.register_script(_MARK_AND_INVALIDATE)

    async def close(self) -> None:
        await self.client.aclose()

    async def lookup(self, product_id: int) -> Lookup:
        if not self.enabled or not self.breaker.allow_request():
            self._metrics.cache_requests.labels("bypass").inc()
            return Lookup("bypass")
        try:
            async with asyncio.timeout(self._call_timeout):
                await self._flush_deferred()
                if self._guard:
                    payload, marker = await self.client.mget(value_key(product_id), marker_key(product_id))
                else:
                    payload, marker = await self.client.get(value_key(product_id)), None
        except _REDIS_FAILURES as exc:
            self._failed("lookup", exc)
            self._metrics.cache_requests.labels("error").inc()
            return Lookup("error")
        self.breaker.record_success()
        marker_value = _marker_value(marker)
        if payload is None:
            self._metrics.cache_requests.labels("miss").inc()
            return Lookup("miss", marker=marker_value)
        self._metrics.cache_requests.labels("hit").inc()
        return Lookup("hit", payload=payload)

    async def fill(self, product_id: int, payload: bytes, *, position: int | None, strict: bool) -> None:
        """Store a value read after a miss; with the guard, only if no newer write is known."""
        if not self.enabled or not self.breaker.allow_request():
            return
        try:
            async with asyncio.timeout(self._call_timeout):
                if self._guard:
                    keys = [value_key(product_id), marker_key(product_id)]
                    args = [payload, self._ttl, str(position or 0), "1" if strict else "0"]
                    stored = await self._fill_script(keys=keys, args=args)
                else:
                    stored = await self.client.set(value_key(product_id), payload, ex=self._ttl)
        except _REDIS_FAILURES as exc:
            self._failed("fill", exc)
            self._metrics.cache_fills.labels("error").inc()
            return
        self.breaker.record_success()
        self._metrics.cache_fills.labels("stored" if stored else "rejected").inc()

    async def invalidate(self, product_id: int, write_position: int | None) -> None:
        """After a write: record its position (guard) and drop the cached value."""
        if not self.enabled:
            return
        if not self.breaker.allow_request():
            self._defer(product_id, write_position)
            logger.warning("redis breaker open: invalidation of product %s deferred", product_id)
            return
        try:
            async with asyncio.timeout(self._call_timeout):
                await self._flush_deferred()
                await self._invalidate_now(self.client, product_id, write_position)
        except _REDIS_FAILURES as exc:
            self._failed("invalidate", exc)
            self._defer(product_id, write_position)
            logger.warning("invalidation of product %s deferred until redis answers", product_id)
            return
        self.breaker.record_success()
        self._metrics.cache_invalidations.labels("ok").inc()

    async def ping(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.client.ping()

    @property
    def pending_invalidations(self) -> int:
        return len(self._deferred)

    async def _invalidate_now(self, client, product_id: int, write_position: int | None) -> None:
        if self._guard and write_position is not None:
            await self._invalidate_script(
                keys=[value_key(product_id), marker_key(product_id)],
                args=[str(write_position), self._marker_ttl],
                client=client,
            )
        else:
            await client.delete(value_key(product_id))

    def _defer(self, product_id: int, write_position: int | None) -> None:
        self._metrics.cache_invalidations.labels("deferred").inc()
        previous = self._deferred.pop(product_id, None)
        if previous is not None and previous[0] is not None:
            write_position = previous[0] if write_position is None else max(previous[0], write_position)
        self._sequence += 1
        self._deferred[product_id] = (write_position, self._sequence)
        if len(self._deferred) > _MAX_PENDING_INVALIDATIONS:
            dropped = next(iter(self._deferred))
            del self._deferred[dropped]
            logger.error("too many deferred invalidations: product %s may stay stale until its TTL", dropped)

    async def _flush_deferred(self) -> None:
        """Replay the deferred invalidations before Redis is used again.

        Entries stay listed until their replay is done, so a lookup racing the
        replay replays them too rather than reading around them.
        """
        if not self._deferred:
            return
        batch = dict(self._deferred)
        async with self.client.pipeline(transaction=False) as pipe:
            for product_id, (position, _) in batch.items():
                await self._invalidate_now(pipe, product_id, position)
            await pipe.execute()
        flushed = 0
        for product_id, entry in batch.items():
            # A newer deferral of the same key (another sequence number) stays.
            if self._deferred.get(product_id) == entry:
                del self._deferred[product_id]
                flushed += 1
        if flushed:
            self._metrics.cache_invalidations.labels("flushed").inc(flushed)
            logger.info("replayed %d deferred invalidation(s)", flushed)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.breaker.record_failure()
        self._metrics.dependency_failures.labels("redis").inc()
        logger.warning("redis %s failed: %s", what, type(exc).__name__)


def _marker_value(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        logger.warning("ignoring a malformed position marker %r", raw[:40])
        return None
