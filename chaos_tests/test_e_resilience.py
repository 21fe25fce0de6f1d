"""TP part E: controlled outages of Redis and of the replica, under load."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from chaoslab import api_client, checkers, pg
from chaoslab.checkers import percentile
from chaoslab.topology import PRIMARY, REDIS, REPLICA
from chaoslab.waits import wait_until
from chaoslab.workload import Workload

pytestmark = pytest.mark.resilience


def _products(lab, api, count: int = 8) -> dict[int, str]:
    products = {api_client.create(api.base_url, f"item-{i}", 100 + i)["id"]: f"item-{i}" for i in range(count)}
    lab.wait_replayed(REPLICA, pg.current_lsn(lab.endpoint(PRIMARY), lab.creds))
    return products


def _read_load(api, ids, seconds: float) -> Workload:
    """A small concurrent read load, bounded in time and count."""
    return Workload(api.base_url, writers=0, readers=4, read_ids=ids, max_ops=20000, max_seconds=seconds,
                    request_timeout=5, pause_between_ops=0.002)


def _read_latencies_ms(history, after: float) -> list[float]:
    return [(done.time - invoke.time) * 1000 for invoke, done in history.pairs()
            if invoke.f == "read" and invoke.time >= after]


@pytest.mark.parametrize("fault", ["stop", "kill", "pause"])
def test_redis_outage_keeps_the_api_answering(lab, api, measure, fault):
    """E1: Redis stopped, killed or frozen: answers come from the database, no 5xx, no wait."""
    api.ensure(CACHE_ENABLED="false")
    products = _products(lab, api)
    no_cache = _read_load(api, list(products), seconds=1.5).start()
    assert no_cache.join(timeout=20), "the read load did not stop within its bounds"
    # The first half second grows the API's connection pool (SCRAM logins): not steady state.
    no_cache_p50 = percentile(_read_latencies_ms(no_cache.history, after=no_cache.history.start + 0.5), 50)

    api.ensure()
    for product_id in products:  # warm cache
        api_client.read(api.base_url, product_id)
    load = _read_load(api, list(products), seconds=3.5).start()
    try:
        wait_until(lambda: len(load.history.ops) > 50, service="api", expected="reads before the fault",
                   timeout=10)
        load.history.mark("fault")
        lab.fault(fault, REDIS)
    finally:
        assert load.join(timeout=20), "the read load did not stop by itself within its bounds"
    fault_at = load.history.event_time("fault")

    reads = checkers.check_reads(load.history, products)
    # The breaker opens after a few failures (within 0.5 s even when each pays the
    # timeout); the rest of the run shows its effect.
    breaker_p50 = percentile(_read_latencies_ms(load.history, after=fault_at + 1.0), 50)
    redis_timeout_ms = api.effective_settings().redis_timeout_ms
    measure("responses_total", reads.total)
    measure("responses_5xx", len(reads.failed))
    measure("p50_ms_no_cache", round(no_cache_p50, 3), "ms")
    measure("p50_ms_breaker_open", round(breaker_p50, 3), "ms")
    assert reads.failed == [], f"reads failed during the Redis outage: {reads.failed[:5]}"
    assert reads.wrong == [], f"reads returned wrong values: {reads.wrong[:5]}"
    assert breaker_p50 < redis_timeout_ms, (
        f"with the breaker open, reads should not pay Redis' {redis_timeout_ms} ms timeout (p50 {breaker_p50:.1f} ms)")
    health = requests.get(f"{api.base_url}/health", timeout=5).json()
    assert health["status"] == "degraded"

    # Redis comes back: the cache is used again, with no restart of the API.
    lab.fault("resume" if fault == "pause" else "start", REDIS)
    back = time.monotonic()
    some_id = next(iter(products))
    wait_until(lambda: api_client.read(api.base_url, some_id).cache == "hit", service="api",
               expected="cache hits to resume after Redis came back", timeout=15, interval=0.1, log=api.log)
    measure("cache_back_after_s", round(time.monotonic() - back, 3), "s")


@pytest.mark.parametrize("policy", ["fallback", "error"])
def test_replica_outage(lab, api, measure, policy):
    """E2: the replica stops; the API falls back to the primary, or says 503, by setting."""
    api.ensure(REPLICA_DOWN_POLICY=policy, CACHE_ENABLED="false")  # every read must reach a database
    products = _products(lab, api, count=3)
    lab.stop(REPLICA)
    reads = [api_client.read(api.base_url, product_id) for product_id in list(products) * 5]
    codes = Counter(read.status for read in reads)
    measure("replica_policy", policy)
    measure("status_codes", ",".join(f"{code}:{count}" for code, count in sorted(codes.items())))
    if policy == "fallback":
        assert codes == {200: len(reads)}
        assert {read.node for read in reads} == {"primary"}
        assert all(read.body["name"] == products[read.body["id"]] for read in reads)
    else:
        assert codes == {503: len(reads)}
        assert all(read.body.get("service") == REPLICA and "error" in read.body for read in reads)

    lab.start_service(REPLICA)
    some_id = next(iter(products))
    wait_until(lambda: api_client.read(api.base_url, some_id).node == "replica", service="api",
               expected="reads to go back to the replica once it is up", timeout=15, interval=0.1, log=api.log)
