"""Cache-aside on Redis for single products, behind a circuit breaker.

Keys, for product ``{id}``:

- ``product:{id}``: the product's JSON, served as stored (never decoded on a hit);
- ``product:{id}:lsn`` (stale-fill guard only): the WAL position, as a decimal
  integer, of the last write to the product;
- ``product:{id}:xfetch`` (stampede protection only): ``"<expiry ms> <delta ms>"``,
  when the value expires and how long its last load took (see service.stampede);
- ``product:{id}:lock`` (stampede protection only): the token of the one request,
  across every API process, that loads the product after a miss.

A hit costs one round trip: one GET, or one MGET of the value with its marker and
its XFetch metadata. Redis being slow or gone never fails a request: every call
is bounded by REDIS_TIMEOUT_MS and, once the breaker is open, skipped. An
invalidation that cannot reach Redis is remembered and replayed before the cache
is used again, so a paused Redis that comes back cannot serve a value overwritten
meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from service.breaker import CircuitBreaker
from service.metrics import Metrics
from service.redis_store import REDIS_FAILURES, RedisStore, open_store
from service.redis_wire import Script
from service.settings import Settings

logger = logging.getLogger(__name__)

LookupResult = Literal["hit", "miss", "error", "bypass"]
ClaimResult = Literal["hit", "owner", "busy", "unavailable"]

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

# KEYS: value, marker, xfetch metadata, lock. ARGV: payload, ttl, position of the
# data, strict ('1': the data must be strictly newer than the marker, for data read
# on a primary whose position can equal a write's that its snapshot did not see
# yet), guard ('1': check the marker at all), metadata ('' for none), lock token
# ('' for none). The lock is released whether or not the value was stored.
_FILL = Script(
    _NEWER_OR_EQUAL
    + """
local stored = 1
if ARGV[5] == '1' then
  local marker = redis.call('GET', KEYS[2])
  if marker then
    local ok = at_least(ARGV[3], marker)
    if ok and ARGV[4] == '1' and ARGV[3] == marker then ok = false end
    if not ok then stored = 0 end
  end
end
if stored == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  if ARGV[6] ~= '' then redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[2]) end
end
if ARGV[7] ~= '' and redis.call('GET', KEYS[4]) == ARGV[7] then redis.call('DEL', KEYS[4]) end
return stored
"""
)

# KEYS: value, marker, xfetch metadata. ARGV: position of the write, marker ttl.
# Keep the largest marker (writes may finish out of order), then drop the value.
_MARK_AND_INVALIDATE = Script(
    _NEWER_OR_EQUAL
    + """
local marker = redis.call('GET', KEYS[2])
if (not marker) or at_least(ARGV[1], marker) then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[1], KEYS[3])
return 1
"""
)

# KEYS: value, lock, marker. ARGV: token, lock ttl (ms). The value if someone filled
# it meanwhile; else the lock if it is free, with the marker as it is now (the
# freshest one to decide where to read); else nothing: someone else is loading.
_GET_OR_LOCK = Script(
    """
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, redis.call('GET', KEYS[3]) or ''}
end
return {0}
"""
)

# KEYS: lock. ARGV: token. Only the holder may release: a holder whose lock
# expired (it was slow) must not delete the lock a later holder took.
_RELEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


def value_key(product_id: int) -> str:
    return f"product:{product_id}"


def marker_key(product_id: int) -> str:
    return f"product:{product_id}:lsn"


def xfetch_key(product_id: int) -> str:
    return f"product:{product_id}:xfetch"


def lock_key(product_id: int) -> str:
    return f"product:{product_id}:lock"


class Lookup:
    __slots__ = ("result", "payload", "marker", "xfetch")

    def __init__(
        self,
        result: LookupResult,
        payload: bytes | None = None,
        marker: int | None = None,
        xfetch: bytes | None = None,
    ) -> None:
        self.result = result
        self.payload = payload
        # Position of the last write to this key, when the guard is on and one is known.
        self.marker = marker
        # The value's XFetch metadata, on a hit with stampede protection on.
        self.xfetch = xfetch

    @property
    def header(self) -> str:
        """X-Cache: an error is a bypass from the client's point of view."""
        return "bypass" if self.result in ("error", "bypass") else self.result


class Claim:
    """After a miss: the value (filled meanwhile), the lock (with the current
    marker), ``busy`` (someone else holds it) or ``unavailable`` (no Redis)."""

    __slots__ = ("result", "payload", "marker")

    def __init__(self, result: ClaimResult, payload: bytes | None = None, marker: int | None = None) -> None:
        self.result = result
        self.payload = payload
        self.marker = marker


_BYPASS = Lookup("bypass")
_ERROR = Lookup("error")


class ProductCache:
    def __init__(self, settings: Settings, metrics: Metrics, breaker: CircuitBreaker,
                 store: RedisStore | None = None) -> None:
        self.breaker = breaker
        self.enabled = settings.cache_enabled
        self._guard = settings.stale_fill_guard
        self._xfetch = settings.stampede_protection
        self._ttl = settings.cache_ttl_seconds
        self._marker_ttl = settings.lsn_marker_ttl_seconds
        self._lock_ttl_ms = settings.stampede_lock_ttl_ms
        self._metrics = metrics
        # Bound once: labels() costs a lock and a dict lookup per call.
        requests = metrics.cache_requests
        self._counted = {result: requests.labels(result).inc for result in ("hit", "miss", "error", "bypass")}
        # product id -> (write position, sequence number) of invalidations not yet done.
        self._deferred: dict[int, tuple[int | None, int]] = {}
        self._sequence = 0
        self.store = store if store is not None else open_store(settings)

    async def close(self) -> None:
        await self.store.close()

    async def lookup(self, product_id: int) -> Lookup:
        if not self.enabled or not self.breaker.allow_request():
            self._counted["bypass"]()
            return _BYPASS
        key = f"product:{product_id}"
        try:
            if self._deferred:
                await self._flush_deferred()
            marker = xfetch = None
            if self._guard and self._xfetch:
                payload, marker, xfetch = await self.store.execute("MGET", key, f"{key}:lsn", f"{key}:xfetch")
            elif self._guard:
                payload, marker = await self.store.execute("MGET", key, f"{key}:lsn")
            elif self._xfetch:
                payload, xfetch = await self.store.execute("MGET", key, f"{key}:xfetch")
            else:
                payload = await self.store.execute("GET", key)
        except REDIS_FAILURES as exc:
            self._failed("lookup", exc)
            self._counted["error"]()
            return _ERROR
        self.breaker.record_success()
        marker_value = None if marker is None else _marker_value(marker)
        if payload is None:
            self._counted["miss"]()
            return Lookup("miss", marker=marker_value)
        self._counted["hit"]()
        return Lookup("hit", payload, marker_value, xfetch)

    async def fill(
        self,
        product_id: int,
        payload: bytes,
        *,
        position: int | None,
        strict: bool,
        xfetch: bytes | None = None,
        token: str | None = None,
    ) -> bool:
        """Store a value read after a miss; with the guard, only if no newer write is
        known. With protection, also its XFetch metadata, and release the lock."""
        if not self.enabled or not self.breaker.allow_request():
            return False
        try:
            if self._guard or xfetch is not None or token is not None:
                keys = [value_key(product_id), marker_key(product_id), xfetch_key(product_id), lock_key(product_id)]
                args = [payload, self._ttl, str(position or 0), "1" if strict else "0", "1" if self._guard else "0",
                        xfetch or b"", token or ""]
                stored = await self.store.run_script(_FILL, keys, args)
            else:
                stored = await self.store.execute("SET", value_key(product_id), payload, "EX", self._ttl)
        except REDIS_FAILURES as exc:
            self._failed("fill", exc)
            self._metrics.cache_fills.labels("error").inc()
            return False
        self.breaker.record_success()
        self._metrics.cache_fills.labels("stored" if stored else "rejected").inc()
        return bool(stored)

    async def claim(self, product_id: int, token: str) -> Claim:
        """After a miss: the value if it is there now, else try to take the load lock."""
        if not self.enabled or not self.breaker.allow_request():
            return Claim("unavailable")
        try:
            reply = await self.store.run_script(
                _GET_OR_LOCK, [value_key(product_id), lock_key(product_id), marker_key(product_id)],
                [token, self._lock_ttl_ms],
            )
        except REDIS_FAILURES as exc:
            self._failed("lock", exc)
            return Claim("unavailable")
        self.breaker.record_success()
        if reply[0] == 1:
            return Claim("hit", payload=reply[1])
        if reply[0] == 2:
            return Claim("owner", marker=_marker_value(reply[1] or None) if self._guard else None)
        return Claim("busy")

    async def try_lock(self, product_id: int, token: str) -> bool:
        """The load lock, whatever the value (an early refresh); False if taken or no Redis."""
        if not self.enabled or not self.breaker.allow_request():
            return False
        try:
            taken = await self.store.execute("SET", lock_key(product_id), token, "NX", "PX", self._lock_ttl_ms)
        except REDIS_FAILURES as exc:
            self._failed("lock", exc)
            return False
        self.breaker.record_success()
        return bool(taken)

    async def release(self, product_id: int, token: str) -> None:
        """Release the load lock if this token still holds it (it expires anyway)."""
        if not self.enabled or not self.breaker.allow_request():
            return
        try:
            await self.store.run_script(_RELEASE, [lock_key(product_id)], [token])
        except REDIS_FAILURES as exc:
            self._failed("unlock", exc)
            return
        self.breaker.record_success()

    async def invalidate(self, product_id: int, write_position: int | None) -> None:
        """After a write: record its position (guard) and drop the cached value."""
        if not self.enabled:
            return
        if not self.breaker.allow_request():
            self._defer(product_id, write_position)
            logger.warning("redis breaker open: invalidation of product %s deferred", product_id)
            return
        try:
            if self._deferred:
                await self._flush_deferred()
            await self.store.execute_many([self._invalidation(product_id, write_position)])
        except REDIS_FAILURES as exc:
            self._failed("invalidate", exc)
            self._defer(product_id, write_position)
            logger.warning("invalidation of product %s deferred until redis answers", product_id)
            return
        self.breaker.record_success()
        self._metrics.cache_invalidations.labels("ok").inc()

    async def ping(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.store.execute("PING")

    @property
    def pending_invalidations(self) -> int:
        return len(self._deferred)

    def _invalidation(self, product_id: int, write_position: int | None) -> tuple:
        """The command that invalidates one product (run alone or pipelined)."""
        if self._guard and write_position is not None:
            keys = (value_key(product_id), marker_key(product_id), xfetch_key(product_id))
            return ("EVAL", _MARK_AND_INVALIDATE.source, 3, *keys, str(write_position), self._marker_ttl)
        return ("DEL", value_key(product_id), xfetch_key(product_id))

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
        batch = dict(self._deferred)
        await self.store.execute_many([self._invalidation(product_id, position)
                                       for product_id, (position, _) in batch.items()])
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
