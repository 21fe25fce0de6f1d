"""What the product routes do: cache-aside reads from the replica, writes on the
primary, the replica-down policy and the stale-fill guard.

The guard (STALE_FILL_GUARD=on) closes the race the brief's design leaves open:
PUT drops ``product:{id}``, a GET misses, reads a replica that has not replayed the
write yet and caches the old row for a whole TTL. Here each write records the WAL
position of its commit in ``product:{id}:lsn`` before dropping the value; a miss
reads that marker with the value, reads the replica together with its replay
position, goes to the primary if the replica is behind the marker, and fills the
cache through a Lua script that refuses data older than the marker at that moment.
If the primary cannot answer then, the replica's row is served but not cached.

Stampede protection (STAMPEDE_PROTECTION=on, the default) keeps a hot key's miss
to one database read. In this process, requests that miss the same key share one
load (single flight). Across processes, the load is done by whoever takes the
key's Redis lock (``SET NX PX`` with a random token, released by a Lua script only
by its holder); the others poll the cache until the value appears, take the lock
themselves once it is free (a dead holder's lock expires) and, past the lock's
lifetime, load anyway so that no request waits unbounded. And XFetch refreshes a
hot value in the background shortly before it expires (see service.stampede), so
the key need not go missing at all. The stale-fill guard applies to every fill.
A request never joins a load that started before a write it knows of: a write in
this process forgets the load in flight, and a newer marker seen in Redis (a
write elsewhere) starts a new load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from service import queries
from service.cache import Lookup, ProductCache
from service.db import DatabaseRole, DatabaseUnavailable, Session
from service.errors import ServiceUnavailable, WriteOutcomeUnknown
from service.lsn import UNKNOWN_WRITE_LSN
from service.metrics import STAMPEDE_EVENTS, Metrics
from service.settings import Settings
from service.stampede import XFetch, lock_token
from service.validation import Page, ProductInput

logger = logging.getLogger(__name__)

Node = Literal["replica", "primary", "none"]


@dataclass(slots=True)  # not frozen: one is made per GET, and frozen init costs more
class ProductRead:
    payload: bytes | None
    cache: str
    node: Node


def _behind_in_recovery(position: queries.Position | None, marker: int) -> bool:
    """A node that answered on the write port but is in recovery and has not replayed
    the key's last write: not the primary that acknowledged it."""
    return position is not None and position.in_recovery and position.lsn < marker


def fill_must_be_newer(position: queries.Position | None, marker_before_read: int | None) -> bool:
    """Whether what was read must be strictly newer than the key's write marker to be cached.

    A primary's position can equal that of a write its snapshot did not see yet (the commit
    flushed, not yet visible), so data read there must be strictly newer than the marker,
    unless that very marker was already in Redis before the read began: a writer sets it only
    once its commit has returned, so the read's snapshot saw that write. Without that
    exception, a key read from an idle primary after a write (the replica down, or behind)
    could not be cached until unrelated WAL moved the primary's position. A standby's replay
    position is only ever that of writes it has applied: at least the marker is enough."""
    if position is None or position.in_recovery:
        return False
    return position.lsn != marker_before_read


@dataclass(frozen=True)
class _NodeRead:
    product: dict[str, Any] | None
    node: Node
    position: queries.Position | None
    cacheable: bool = True


@dataclass
class _Flight:
    """A load under way in this process, and the write position it knew of."""

    task: asyncio.Task
    marker: int | None

    def covers(self, marker: int | None) -> bool:
        """Whether a request that saw ``marker`` may share this load's result."""
        return marker is None or (self.marker is not None and self.marker >= marker)


# Background early refreshes at once, at most: beyond, values just expire and the
# lock keeps each miss to one load.
_MAX_REFRESHES = 256


def encode(document: Any) -> bytes:
    # The same bytes whether served fresh or from Redis.
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ProductService:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        primary: DatabaseRole,
        replica: DatabaseRole,
        cache: ProductCache,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self.primary = primary
        self.replica = replica
        self.cache = cache
        self._guard = settings.stale_fill_guard
        self._protect = settings.stampede_protection and settings.cache_enabled
        self._xfetch = XFetch(settings.xfetch_beta)
        self._lock_wait_s = settings.stampede_lock_ttl_ms / 1000.0
        self._poll_s = settings.stampede_poll_ms / 1000.0
        self._events = {event: metrics.stampede_events.labels(event).inc for event in STAMPEDE_EVENTS}
        self._flights: dict[int, _Flight] = {}
        self._refreshing: dict[int, asyncio.Task] = {}

    async def close(self) -> None:
        """Cancel the background refreshes (at shutdown)."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Reads

    async def get(self, product_id: int) -> ProductRead:
        lookup = await self.cache.lookup(product_id)
        if lookup.result == "hit":
            if lookup.xfetch is not None and self._xfetch.due(lookup.xfetch):
                self._refresh_early(product_id, lookup.marker)
            return ProductRead(lookup.payload, "hit", "none")
        if self._protect and lookup.result == "miss":
            return await self._load_once(product_id, lookup.marker)
        return await self._load(product_id, lookup)

    async def _load(self, product_id: int, lookup: Lookup) -> ProductRead:
        """The brief's cache-aside: read a database, then fill the cache after a miss."""
        read = await self._read_product(product_id, lookup)
        payload = None if read.product is None else encode(read.product)
        if payload is not None and lookup.result == "miss" and read.cacheable:
            position = read.position
            await self.cache.fill(
                product_id,
                payload,
                position=None if position is None else position.lsn,
                strict=fill_must_be_newer(position, lookup.marker),
            )
        return ProductRead(payload, lookup.header, read.node)

    # Stampede protection

    async def _load_once(self, product_id: int, marker: int | None) -> ProductRead:
        """After a miss: share the load under way in this process, or start one."""
        flight = self._flights.get(product_id)
        if flight is not None and flight.covers(marker):
            self._events["joined"]()
        else:
            task = asyncio.ensure_future(self._load_under_lock(product_id, marker))
            flight = self._flights[product_id] = _Flight(task, marker)
            task.add_done_callback(lambda _: self._land(product_id, flight))
        # Shielded: a request that goes away must not cancel the others' load.
        return await asyncio.shield(flight.task)

    def _land(self, product_id: int, flight: _Flight) -> None:
        if self._flights.get(product_id) is flight:
            del self._flights[product_id]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved, even if every requester went away

    def _forget_loads(self, product_id: int) -> None:
        """After a write here: later reads must not share a load that began before it."""
        self._flights.pop(product_id, None)

    async def _load_under_lock(self, product_id: int, marker: int | None) -> ProductRead:
        """Load for every process, or wait for the one that does.

        Waits at most the lock's lifetime plus a poll: by then the lock has expired
        and been taken over, or something keeps taking it, and loading anyway
        bounds the wait.
        """
        token = lock_token()
        deadline = time.monotonic() + self._lock_wait_s + self._poll_s
        waited = False
        while True:
            claim = await self.cache.claim(product_id, token)
            if claim.result == "owner":
                self._events["lock_acquired"]()
                if claim.marker is not None:  # read just now: a write since the lookup shows
                    marker = claim.marker
                break
            if claim.result == "hit":
                if waited:
                    self._events["served_after_wait"]()
                return ProductRead(claim.payload, "hit", "none")
            if claim.result == "unavailable":  # no Redis: no cache, no lock
                token = None
                break
            if not waited:
                waited = True
                self._events["lock_waited"]()
            if time.monotonic() >= deadline:
                self._events["wait_expired"]()
                logger.warning("product %s: no value after %.1f s of waiting for its load; loading", product_id,
                               self._lock_wait_s)
                token = None
                break
            await asyncio.sleep(self._poll_s)
        return await self._load_and_fill(product_id, marker, token, header="miss")

    async def _load_and_fill(self, product_id: int, marker: int | None, token: str | None, *,
                             header: str) -> ProductRead:
        """Read the product and fill the cache with its XFetch metadata; release the lock."""
        filled = False
        try:
            started = time.monotonic()
            read = await self._read_product(product_id, Lookup("miss", marker=marker))
            delta = time.monotonic() - started
            payload = None if read.product is None else encode(read.product)
            if payload is not None and read.cacheable:
                position = read.position
                filled = True  # the fill releases the lock, stored or not
                await self.cache.fill(
                    product_id,
                    payload,
                    position=None if position is None else position.lsn,
                    strict=fill_must_be_newer(position, marker),
                    xfetch=self._xfetch.meta(self._settings.cache_ttl_seconds, delta),
                    token=token,
                )
            return ProductRead(payload, header, read.node)
        finally:
            if token is not None and not filled:
                await self.cache.release(product_id, token)

    def _refresh_early(self, product_id: int, marker: int | None) -> None:
        """XFetch said so: refresh in the background; this request is served the hit."""
        if product_id in self._refreshing or product_id in self._flights or len(self._refreshing) >= _MAX_REFRESHES:
            return
        task = asyncio.ensure_future(self._refresh(product_id, marker))
        self._refreshing[product_id] = task
        task.add_done_callback(lambda _: self._refreshing.pop(product_id, None))

    async def _refresh(self, product_id: int, marker: int | None) -> None:
        token = lock_token()
        if not await self.cache.try_lock(product_id, token):
            self._events["early_refresh_skipped"]()
            return
        self._events["early_refresh"]()
        try:
            await self._load_and_fill(product_id, marker, token, header="hit")
        except ServiceUnavailable as exc:
            logger.info("early refresh of product %s failed: %s", product_id, exc)
        except Exception:
            logger.warning("early refresh of product %s failed", product_id, exc_info=True)

    async def list(self, page: Page) -> tuple[list[dict[str, Any]], Node]:
        async def operation(session: Session) -> list[dict[str, Any]]:
            return await queries.list_products(session, page.after_id, page.limit)

        return await self._on_replica_or_policy(operation)

    async def _read_product(self, product_id: int, lookup: Lookup) -> _NodeRead:
        with_position = self._guard and lookup.result == "miss"

        async def operation(session: Session) -> tuple[dict[str, Any] | None, queries.Position | None]:
            if with_position:
                return await queries.fetch_product_at_position(session, product_id)
            return await queries.fetch_product(session, product_id), None

        (product, position), node = await self._on_replica_or_policy(operation)
        if node == "replica" and lookup.marker is not None and position is not None and position.lsn < lookup.marker:
            # The replica has not replayed this key's last write: its row may be old.
            self._metrics.read_redirects.labels("replica_behind").inc()
            try:
                primary_read = await self.primary.run(operation, retry_if_broken=True)
            except DatabaseUnavailable:
                primary_read = None
            if primary_read is None or _behind_in_recovery(primary_read[1], lookup.marker):
                # No primary (the very moment writes fail too), or the node behind the
                # write port is in recovery and behind too (a demoted leader restarting
                # as a standby opens for reads before it has replayed its own WAL):
                # answer what the replica has, as the brief's design would, but never
                # cache it. The write behind the marker may even be lost after a failover.
                logger.info("product %s: replica behind its last write and no primary; serving the replica", product_id)
                return _NodeRead(product, "replica", position, cacheable=False)
            (product, position) = primary_read
            node = "primary"
        return _NodeRead(product, node, position)

    async def _on_replica_or_policy(self, operation):
        try:
            return await self.replica.run(operation, retry_if_broken=True), "replica"
        except DatabaseUnavailable as replica_down:
            if self._settings.replica_down_policy == "error":
                raise _unavailable(replica_down) from None
            self._metrics.read_redirects.labels("replica_unavailable").inc()
            try:
                return await self.primary.run(operation, retry_if_broken=True), "primary"
            except DatabaseUnavailable as primary_down:
                raise ServiceUnavailable(
                    "the replica is unavailable and the fallback read on the primary failed too",
                    service=replica_down.service,
                    retry_after=min(replica_down.retry_after, primary_down.retry_after),
                ) from None

    # Writes

    async def create(self, item: ProductInput) -> dict[str, Any]:
        async def operation(session: Session) -> tuple[dict[str, Any], int | None]:
            product = await queries.insert_product(session, item)
            return product, await self._position_after_commit(session)

        product, position = await self._write(operation, product_id=None)
        self._forget_loads(product["id"])
        if self._settings.tracks_write_lsn:
            # Read-your-writes for the new id: a GET before the replica replays the
            # insert goes to the primary instead of answering 404.
            await self.cache.invalidate(product["id"], position)
        return product

    async def update(self, product_id: int, item: ProductInput) -> dict[str, Any] | None:
        async def operation(session: Session) -> tuple[dict[str, Any] | None, int | None]:
            product = await queries.update_product(session, product_id, item)
            if product is None:
                return None, None
            return product, await self._position_after_commit(session)

        product, position = await self._write(operation, product_id=product_id)
        if product is not None:
            self._forget_loads(product_id)
            await self.cache.invalidate(product_id, position)
        return product

    async def delete(self, product_id: int) -> bool:
        async def operation(session: Session) -> tuple[bool, int | None]:
            deleted = await queries.delete_product(session, product_id)
            if not deleted:
                return False, None
            return True, await self._position_after_commit(session)

        deleted, position = await self._write(operation, product_id=product_id)
        if deleted:
            self._forget_loads(product_id)
            await self.cache.invalidate(product_id, position)
        return deleted

    async def _write(self, operation, *, product_id: int | None):
        try:
            return await self.primary.run(operation, retry_if_broken=False)
        except DatabaseUnavailable as exc:
            if not exc.maybe_applied:
                raise _unavailable(exc) from None
            if product_id is not None:
                # The write may have committed: do not let the cache keep the old row.
                self._forget_loads(product_id)
                await self.cache.invalidate(product_id, UNKNOWN_WRITE_LSN if self._guard else None)
            raise WriteOutcomeUnknown(
                f"{exc.service}: {exc.reason} after the write was sent; it may or may not have been committed",
                service=exc.service, timed_out=exc.reason == "timed out", retry_after=exc.retry_after) from None

    async def _position_after_commit(self, session: Session) -> int | None:
        if not self._settings.tracks_write_lsn:
            return None
        try:
            return await queries.current_wal_lsn(session)
        except Exception:
            # The write has committed; only its position is unknown. A marker no
            # replica can reach keeps the key off the replica and out of the cache
            # until the marker expires.
            logger.warning("write committed but its WAL position could not be read", exc_info=True)
            return UNKNOWN_WRITE_LSN


def _unavailable(exc: DatabaseUnavailable) -> ServiceUnavailable:
    return ServiceUnavailable(f"{exc.service} is unavailable ({exc.reason})", service=exc.service, retry_after=exc.retry_after)
