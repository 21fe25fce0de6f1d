"""TP part E: controlled outages of Redis and of the replica, under load."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from chaoslab import api_client, steps
from chaoslab.api_server import ApiServer
from chaoslab.topology import REDIS, REPLICA
from chaoslab.waits import wait_until

pytestmark = pytest.mark.resilience

BACK = {"stop": "start", "kill": "start", "pause": "resume"}   # how Redis comes back after each fault


@pytest.mark.parametrize("fault", ["stop", "kill", "pause"])
def test_redis_outage_keeps_the_api_answering(lab, api, no_cache_api, measure, fault):
    """E1: Redis stopped, killed or frozen: answers come from the database, no error, no wait."""
    steps.redis_outage_under_read_load(lab, api, no_cache_api, measure, fault=lambda: lab.fault(fault, REDIS),
                                       back=lambda: lab.fault(BACK[fault], REDIS), what=f"Redis {fault}")


@pytest.mark.parametrize("fault", ["stop", "kill", "pause"])
def test_a_write_during_a_redis_outage_is_seen_once_redis_is_back(lab, api, measure, fault):
    """E1 with a write: Redis goes down holding the old value of a product (frozen in memory, or
    in a snapshot that a restart loads, as redis:7's default snapshots do); reads go on, then a
    PUT is answered at once; when Redis is back with the old value, no GET may serve it."""
    steps.write_during_redis_outage(lab, api, measure, fault=lambda: lab.fault(fault, REDIS),
                                    back=lambda: lab.fault(BACK[fault], REDIS), what=f"Redis {fault}")


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
def test_replica_outage(lab, api_with, measure, policy):
    """E2: the replica stops; the API falls back to the primary, or says 503, by setting."""
    api = api_with(REPLICA_DOWN_POLICY=policy, CACHE_ENABLED="false")  # every read must reach a database
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


def test_with_the_replica_down_a_product_just_written_is_cached_from_the_primary(lab, api):
    """E2, the cache on (fallback): reads go to the primary, idle since the last write, so its WAL
    position is exactly that write's. The stale-fill guard must still let the value into Redis
    (read in Redis itself), the new one after a PUT: else every read of a recently written key
    would go to the primary for as long as the replica is down."""
    lab.stop(REPLICA)
    product_id = api_client.create(api.base_url, "written-with-the-replica-down", 100)["id"]
    key = f"product:{product_id}"
    for price in (100, 250):
        if price != 100:
            assert api_client.update(api.base_url, product_id, "written-with-the-replica-down", price).status_code == 200
        first = api_client.read(api.base_url, product_id)
        assert (first.status, first.node, first.cache) == (200, "primary", "miss"), (
            f"with {REPLICA} down, the first read after a write should miss and fall back to the primary: {first}")
        cached = lab.redis().get(key)
        assert cached is not None and json.loads(cached)["price_cents"] == price, (
            f"redis: expected {key} filled with price_cents {price} by that read from the idle primary, "
            f"it holds {cached!r} (log: {api.log})")
        assert api_client.read(api.base_url, product_id).cache == "hit"
