"""TP part E: controlled outages of Redis and of the replica, under load."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests

from chaoslab import api_client, checkers, steps
from chaoslab.api_server import ApiServer
from chaoslab.checkers import percentile
from chaoslab.topology import REDIS, REPLICA
from chaoslab.waits import wait_until

pytestmark = pytest.mark.resilience

BACK = {"stop": "start", "kill": "start", "pause": "resume"}   # how Redis comes back after each fault
# A write must be answered within this whatever Redis does (the API bounds each Redis call).
WRITE_BOUND_S = 2.0
# With the breaker open, reads may cost at most this many times a read with the cache off.
BREAKER_COST_RATIO = 3.0


@pytest.mark.parametrize("fault", ["stop", "kill", "pause"])
def test_redis_outage_keeps_the_api_answering(lab, api, measure, fault):
    """E1: Redis stopped, killed or frozen: answers come from the database, no error, no wait."""
    api.ensure(CACHE_ENABLED="false")
    products = steps.create_products(lab, api, 8)
    no_cache = steps.read_load(api, list(products), seconds=1.5).start()
    assert no_cache.join(timeout=20), "the read load did not stop within its bounds"
    # The first half second grows the API's connection pool (SCRAM logins): not steady state.
    no_cache_p50 = percentile(steps.read_latencies_ms(no_cache.history, after=no_cache.history.start + 0.5), 50)

    api.ensure()
    for product_id in products:  # warm cache
        api_client.read(api.base_url, product_id)
    load = steps.read_load(api, list(products), seconds=3.5).start()
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
    breaker_p50 = percentile(steps.read_latencies_ms(load.history, after=fault_at + 1.0), 50)
    steps.record_reads(measure, reads)
    measure("p50_ms_no_cache", round(no_cache_p50, 3), "ms")
    measure("p50_ms_breaker_open", round(breaker_p50, 3), "ms")
    steps.assert_reads_answered(reads, f"the Redis outage ({fault})")
    assert breaker_p50 <= BREAKER_COST_RATIO * no_cache_p50, (
        f"with Redis down, reads should cost what reads without a cache cost: p50 {breaker_p50:.1f} ms, "
        f"against {no_cache_p50:.1f} ms with the cache off in this run")
    health = requests.get(f"{api.base_url}/health", timeout=5).json()
    assert health["status"] == "degraded"

    # Redis comes back: the cache is used again, with no restart of the API.
    lab.fault(BACK[fault], REDIS)
    back = time.monotonic()
    key = f"product:{next(iter(products))}"
    lab.redis().delete(key)   # whatever Redis kept: the API must fill the key again
    wait_until(lambda: api_client.read(api.base_url, next(iter(products))) and lab.redis().exists(key),
               service="api", expected=f"{key} cached again after Redis came back", timeout=15,
               interval=0.1, log=api.log)
    measure("cache_back_after_s", round(time.monotonic() - back, 3), "s")


@pytest.mark.parametrize("fault", ["stop", "kill", "pause"])
def test_a_write_during_a_redis_outage_is_seen_once_redis_is_back(lab, api, measure, fault):
    """E1 with a write: Redis goes down holding the old value of a product (frozen in memory, or
    in a snapshot that a restart loads, as redis:7's default snapshots do); reads go on, then a
    PUT is answered at once; when Redis is back with the old value, no GET may serve it."""
    product = api_client.create(api.base_url, "Keyboard", 4999)
    lab.wait_caught_up()
    key = f"product:{product['id']}"
    api_client.read(api.base_url, product["id"])
    lab.redis().save()   # the cached old value is on disk too
    lab.fault(fault, REDIS)
    # Reads go on meanwhile (and open the API's Redis breaker, if it has one): from the database.
    during = [api_client.read(api.base_url, product["id"]).body.get("price_cents") for _ in range(5)]
    assert during == [4999] * 5, f"reads with Redis {fault} answered {during}"

    started = time.monotonic()
    put = api_client.update(api.base_url, product["id"], "Keyboard", 3999)
    measure("put_during_outage_ms", round((time.monotonic() - started) * 1000, 1), "ms")
    assert put.status_code == 200, f"a PUT with Redis {fault} must succeed, got {put.status_code} {put.text[:200]}"
    assert time.monotonic() - started < WRITE_BOUND_S, "a PUT must not wait for a Redis that does not answer"
    lab.wait_caught_up()
    assert api_client.read(api.base_url, product["id"]).body.get("price_cents") == 3999

    lab.fault(BACK[fault], REDIS)
    held = lab.redis().get(key)
    assert held is not None and json.loads(held)["price_cents"] == 4999, "Redis should come back with the old value"
    reads: list[api_client.Read] = []

    def redis_used_again() -> bool:
        reads.append(api_client.read(api.base_url, product["id"]))
        return reads[-1].cache != "bypass"
    wait_until(redis_used_again, service="api", expected="GETs to use Redis again after it came back",
               timeout=15, interval=0.05, log=api.log)
    served = [read.body.get("price_cents") for read in reads]
    assert set(served) == {3999}, f"GETs after Redis came back served {served}: the old value survived the PUT"
    now = lab.redis().get(key)
    assert now is None or json.loads(now)["price_cents"] == 3999, f"Redis still holds the old value: {now}"


def test_an_api_started_while_redis_is_down_answers_then_uses_the_cache(lab, api):
    """E1 from the start: an API process started with Redis stopped reads and writes from the
    database; when Redis starts, it fills the cache without a restart."""
    product = api_client.create(api.base_url, "Keyboard", 4999)
    lab.wait_caught_up()
    lab.stop(REDIS)
    late = ApiServer(lab)
    try:
        late.start()
        assert api_client.read(late.base_url, product["id"]).body.get("price_cents") == 4999
        assert api_client.update(late.base_url, product["id"], "Keyboard", 3999).status_code == 200
        lab.wait_caught_up()
        assert api_client.read(late.base_url, product["id"]).body.get("price_cents") == 3999
        lab.start_service(REDIS)
        key = f"product:{product['id']}"
        wait_until(lambda: api_client.read(late.base_url, product["id"]) and lab.redis().get(key),
                   service="api", expected=f"{key} filled in Redis once it started", timeout=15, interval=0.1,
                   log=late.log)
        assert json.loads(lab.redis().get(key))["price_cents"] == 3999
    finally:
        late.close()


@pytest.mark.parametrize("policy", ["fallback", "error"])
def test_replica_outage(lab, api, measure, policy):
    """E2: the replica stops; the API falls back to the primary, or says 503, by setting."""
    api.ensure(REPLICA_DOWN_POLICY=policy, CACHE_ENABLED="false")  # every read must reach a database
    products = steps.create_products(lab, api, 3)
    lab.stop(REPLICA)
    started = time.monotonic()
    reads = [api_client.read(api.base_url, next(iter(products)))]
    measure("first_fallback_ms", round((time.monotonic() - started) * 1000, 1), "ms")
    reads += [api_client.read(api.base_url, product_id) for product_id in list(products) * 5]
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
