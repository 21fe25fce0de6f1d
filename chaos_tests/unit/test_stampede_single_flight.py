"""The anti-stampede orchestration in service.products, against an in-memory cache and
database roles that count their reads (the Lua and the wire are tested on a real
Redis in chaos_tests/test_stampede.py)."""

from __future__ import annotations

import asyncio

import pytest

from service import queries
from service.cache import Claim, Lookup
from service.db import DatabaseUnavailable
from service.metrics import Metrics
from service.products import ProductService
from service.settings import Settings
from service.stampede import XFetch
from service.validation import ProductInput

ROW = {"id": 1, "name": "Keyboard", "price_cents": 4999, "updated_at": "2026-01-01T00:00:00"}
POSITION = queries.Position(lsn=100, in_recovery=True)


def _settings(**overrides) -> Settings:
    env = {"DB_WRITE_DSN": "x", "DB_READ_DSN": "x", "REDIS_URL": "redis://127.0.0.1:1/0",
           "STAMPEDE_LOCK_TTL_MS": "200", "STAMPEDE_POLL_MS": "5", **overrides}
    return Settings.from_env(env)


class FakeRole:
    """A database role: each run is one read, slow enough for requests to pile up."""

    def __init__(self, role: str, delay: float = 0.02) -> None:
        self.role = role
        self.delay = delay
        self.reads = 0
        self.fail = False
        self.row = dict(ROW)

    async def run(self, operation, *, retry_if_broken: bool):
        self.reads += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise DatabaseUnavailable(self.role, "down")
        return dict(self.row), POSITION


class FakeCache:
    """Always misses; ``claims`` scripts what the lock says, then the lock is free."""

    def __init__(self, marker: int | None = 50) -> None:
        self.marker = marker
        self.claims: list[Claim] = []
        self.fills: list[dict] = []
        self.releases: list[str] = []
        self.invalidations: list[int] = []
        self.locks_taken = 0
        self.hit: Lookup | None = None

    async def lookup(self, product_id: int) -> Lookup:
        await asyncio.sleep(0)
        return self.hit if self.hit is not None else Lookup("miss", marker=self.marker)

    async def claim(self, product_id: int, token: str) -> Claim:
        await asyncio.sleep(0)
        if self.claims:
            return self.claims.pop(0)
        self.locks_taken += 1
        return Claim("owner", marker=self.marker)

    async def try_lock(self, product_id: int, token: str) -> bool:
        self.locks_taken += 1
        return True

    async def fill(self, product_id, payload, *, position, strict, xfetch=None, token=None) -> bool:
        self.fills.append({"payload": payload, "position": position, "xfetch": xfetch, "token": token})
        return True

    async def release(self, product_id: int, token: str) -> None:
        self.releases.append(token)

    async def invalidate(self, product_id: int, write_position: int | None) -> None:
        self.invalidations.append(product_id)


def _service(cache: FakeCache, **settings) -> tuple[ProductService, FakeRole, FakeRole, Metrics]:
    metrics = Metrics()
    primary, replica = FakeRole("primary"), FakeRole("replica")
    return ProductService(_settings(**settings), metrics, primary, replica, cache), primary, replica, metrics


def _event(metrics: Metrics, event: str) -> float:
    return metrics.stampede_events.labels(event)._value.get()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_concurrent_misses_share_one_load_and_one_fill():
    async def scenario():
        cache = FakeCache()
        service, _, replica, metrics = _service(cache)
        reads = await asyncio.gather(*(service.get(1) for _ in range(100)))
        assert replica.reads == 1
        assert {(r.payload, r.cache, r.node) for r in reads} == {(reads[0].payload, "miss", "replica")}
        assert len(cache.fills) == 1 and cache.fills[0]["token"] and cache.fills[0]["xfetch"]
        assert cache.fills[0]["position"] == 100
        assert _event(metrics, "joined") == 99 and _event(metrics, "lock_acquired") == 1

    run(scenario())


def test_without_protection_every_miss_loads():
    async def scenario():
        cache = FakeCache()
        service, _, replica, _ = _service(cache, STAMPEDE_PROTECTION="off")
        await asyncio.gather(*(service.get(1) for _ in range(20)))
        assert replica.reads == 20
        assert cache.locks_taken == 0 and all(f["token"] is None and f["xfetch"] is None for f in cache.fills)

    run(scenario())


def test_a_request_that_knows_of_a_newer_write_does_not_join_an_older_load():
    async def scenario():
        cache = FakeCache(marker=50)
        service, _, replica, _ = _service(cache)
        first = asyncio.ensure_future(service.get(1))
        await asyncio.sleep(0.005)  # the first load is under way
        cache.marker = 60  # a write elsewhere: the next lookups see its marker
        await asyncio.gather(first, service.get(1), service.get(1))
        assert replica.reads == 2

    run(scenario())


def test_a_write_in_this_process_stops_later_reads_from_joining_the_load_in_flight():
    async def scenario():
        cache = FakeCache(marker=None)  # no guard information at all
        service, primary, replica, _ = _service(cache, STALE_FILL_GUARD="off")
        first = asyncio.ensure_future(service.get(1))
        await asyncio.sleep(0.005)
        primary.delay = 0
        await service.update(1, ProductInput(name="Keyboard", price_cents=3999))
        await asyncio.gather(first, service.get(1))
        assert replica.reads == 2
        assert cache.invalidations == [1]

    run(scenario())


def test_waiting_for_another_process_serves_what_it_filled():
    async def scenario():
        cache = FakeCache()
        cache.claims = [Claim("busy"), Claim("busy"), Claim("hit", payload=b'{"id":1}')]
        service, _, replica, metrics = _service(cache)
        read = await service.get(1)
        assert (read.payload, read.cache, read.node) == (b'{"id":1}', "hit", "none")
        assert replica.reads == 0
        assert _event(metrics, "lock_waited") == 1 and _event(metrics, "served_after_wait") == 1

    run(scenario())


def test_a_lock_that_never_frees_delays_a_request_at_most_its_lifetime_then_it_loads():
    async def scenario():
        cache = FakeCache()
        cache.claims = [Claim("busy")] * 1000
        service, _, replica, metrics = _service(cache, STAMPEDE_LOCK_TTL_MS="100")
        started = asyncio.get_running_loop().time()
        read = await service.get(1)
        waited = asyncio.get_running_loop().time() - started
        assert read.cache == "miss" and replica.reads == 1
        assert 0.1 <= waited < 0.1 + 0.2
        assert _event(metrics, "wait_expired") == 1
        assert cache.fills[0]["token"] is None, "a request that loads without the lock releases nothing"

    run(scenario())


def test_no_redis_for_the_lock_means_loading_without_it():
    async def scenario():
        cache = FakeCache()
        cache.claims = [Claim("unavailable")]
        service, _, replica, _ = _service(cache)
        await service.get(1)
        assert replica.reads == 1 and cache.fills[0]["token"] is None and cache.releases == []

    run(scenario())


def test_a_failed_load_releases_the_lock_and_fails_every_request_that_shared_it():
    async def scenario():
        cache = FakeCache()
        service, primary, replica, _ = _service(cache)
        replica.fail = primary.fail = True
        results = await asyncio.gather(*(service.get(1) for _ in range(10)), return_exceptions=True)
        assert all(type(r).__name__ == "ServiceUnavailable" for r in results)
        assert replica.reads == 1 and len(cache.releases) == 1 and cache.fills == []

    run(scenario())


def test_a_missing_product_is_not_cached_and_the_lock_is_released():
    async def scenario():
        cache = FakeCache()
        service, _, replica, _ = _service(cache)
        replica.row = None

        async def none_run(operation, *, retry_if_broken):
            replica.reads += 1
            return None, POSITION

        replica.run = none_run
        reads = await asyncio.gather(*(service.get(1) for _ in range(5)))
        assert {r.payload for r in reads} == {None} and replica.reads == 1
        assert cache.fills == [] and len(cache.releases) == 1

    run(scenario())


@pytest.mark.parametrize("draw, refreshes", [(0.0, 0), (1.0 - 2.0 ** -53, 1)])
def test_a_hit_that_xfetch_picks_is_served_and_refreshed_in_the_background(draw, refreshes):
    async def scenario():
        cache = FakeCache()
        service, _, replica, metrics = _service(cache)
        meta = XFetch(1.0, clock=lambda: 1000.0).meta(ttl_s=1, delta_s=0.01)  # expires at 1001 s
        service._xfetch = XFetch(1.0, clock=lambda: 1000.99, random=lambda: draw)  # 10 ms before expiry
        cache.hit = Lookup("hit", b'{"id":1}', 50, meta)
        reads = await asyncio.gather(*(service.get(1) for _ in range(10)))
        assert {r.cache for r in reads} == {"hit"}
        await asyncio.sleep(0.1)  # the background refresh
        assert replica.reads == refreshes and len(cache.fills) == refreshes
        assert _event(metrics, "early_refresh") == refreshes

    run(scenario())


def test_shutdown_cancels_background_refreshes():
    async def scenario():
        cache = FakeCache()
        service, _, replica, _ = _service(cache)
        replica.delay = 5
        service._refresh_early(1, None)
        await asyncio.sleep(0.01)
        await service.close()
        assert service._refreshing == {}

    run(scenario())
