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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from service import queries
from service.cache import Lookup, ProductCache
from service.db import DatabaseRole, DatabaseUnavailable, Session
from service.errors import ServiceUnavailable
from service.lsn import UNKNOWN_WRITE_LSN
from service.metrics import Metrics
from service.settings import Settings
from service.validation import Page, ProductInput

logger = logging.getLogger(__name__)

Node = Literal["replica", "primary", "none"]


@dataclass(frozen=True)
class ProductRead:
    payload: bytes | None
    cache: str
    node: Node


@dataclass(frozen=True)
class _NodeRead:
    product: dict[str, Any] | None
    node: Node
    position: queries.Position | None
    cacheable: bool = True


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

    # Reads

    async def get(self, product_id: int) -> ProductRead:
        lookup = await self.cache.lookup(product_id)
        if lookup.result == "hit":
            return ProductRead(lookup.payload, "hit", "none")
        read = await self._read_product(product_id, lookup)
        payload = None if read.product is None else encode(read.product)
        if payload is not None and lookup.result == "miss" and read.cacheable:
            position = read.position
            await self.cache.fill(
                product_id,
                payload,
                position=None if position is None else position.lsn,
                # A primary's position can equal a write's that its snapshot did not
                # see yet (commit flushed, not yet visible): demand strictly newer.
                strict=position is not None and not position.in_recovery,
            )
        return ProductRead(payload, lookup.header, read.node)

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
                (product, position) = await self.primary.run(operation, retry_if_broken=True)
            except DatabaseUnavailable:
                # No primary (the very moment writes fail too): answer what the
                # replica has, as the brief's design would, but never cache it. The
                # write behind the marker may even be lost for good after a failover.
                logger.info("product %s: replica behind its last write and no primary; serving the replica", product_id)
                return _NodeRead(product, "replica", position, cacheable=False)
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
            await self.cache.invalidate(product_id, position)
        return deleted

    async def _write(self, operation, *, product_id: int | None):
        try:
            return await self.primary.run(operation, retry_if_broken=False)
        except DatabaseUnavailable as exc:
            if exc.maybe_applied and product_id is not None:
                # The write may have committed: do not let the cache keep the old row.
                await self.cache.invalidate(product_id, UNKNOWN_WRITE_LSN if self._guard else None)
            raise _unavailable(exc) from None

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
