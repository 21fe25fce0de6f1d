"""TP part D: cache-aside on GET /products/{id}, invalidation, and stale reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from chaoslab import api_client, pg
from chaoslab.checkers import percentile
from chaoslab.topology import PRIMARY, REPLICA
from chaoslab.waits import wait_until

pytestmark = pytest.mark.cache

REPORTS = Path(__file__).resolve().parent.parent / "reports" / "data"


def _replicated(lab) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    lab.wait_replayed(REPLICA, pg.current_lsn(lab.endpoint(PRIMARY), lab.creds))


def _product(lab, api, name="Keyboard", price=4999) -> dict:
    product = api_client.create(api.base_url, name, price)
    _replicated(lab)
    return product


def test_miss_then_hit(lab, api):
    product = _product(lab, api)
    first = api_client.read(api.base_url, product["id"])
    assert (first.status, first.cache, first.node) == (200, "miss", "replica")
    second = api_client.read(api.base_url, product["id"])
    assert (second.status, second.cache, second.node) == (200, "hit", "none")
    assert second.body["price_cents"] == first.body["price_cents"] == 4999


def test_key_and_ttl_are_visible_in_redis(lab, api, measure):
    product = _product(lab, api)
    api_client.read(api.base_url, product["id"])
    key = f"product:{product['id']}"
    redis = lab.redis()
    cached = json.loads(redis.get(key))
    ttl = redis.ttl(key)
    configured = api.effective_settings().cache_ttl_seconds
    measure("cache_ttl_s", configured, "s")
    assert cached["price_cents"] == 4999
    assert 0 < ttl <= configured, f"{key} should expire within {configured}s, TTL is {ttl}"


def test_put_invalidates_the_key(lab, api):
    product = _product(lab, api)
    api_client.read(api.base_url, product["id"])
    key = f"product:{product['id']}"
    assert lab.redis().exists(key)
    response = api_client.update(api.base_url, product["id"], "Keyboard", 3999)
    assert response.status_code == 200
    assert not lab.redis().exists(key), "PUT must delete the cached key"
    _replicated(lab)
    assert api_client.read(api.base_url, product["id"]).body["price_cents"] == 3999


def _stale_window_ms(api, product_id: int, new_price: int, timeout: float = 20) -> float:
    """Read right after a PUT until the new value shows; how long reads were stale."""
    started = time.monotonic()
    wait_until(lambda: api_client.read(api.base_url, product_id).body.get("price_cents") == new_price,
               service="api", expected=f"GET /products/{product_id} to return price {new_price}",
               timeout=timeout, interval=0.02, log=api.log)
    return (time.monotonic() - started) * 1000


def test_read_after_write_is_stale_while_the_replica_lags_d4(lab, api, measure):
    """D4 made deterministic: an apply delay on the replica, a read right after a PUT.

    The cache is off here so that only replication lag is measured; the cache's own
    effect is the race test below.
    """
    api.ensure(CACHE_ENABLED="false")
    product = _product(lab, api)
    delay_ms = 1500
    lab.delay_replay(REPLICA, delay_ms)

    assert api_client.update(api.base_url, product["id"], "Keyboard", 3999).status_code == 200
    right_after = api_client.read(api.base_url, product["id"])
    assert right_after.body["price_cents"] == 4999, "the lagging replica should still serve the old price"
    window = _stale_window_ms(api, product["id"], 3999)
    measure("apply_delay_ms", delay_ms, "ms")
    measure("stale_window_ms", round(window, 1), "ms")
    assert window >= delay_ms * 0.5, "the stale window should reflect the injected apply delay"

    # With the delay removed, reads converge as soon as the replica replays.
    pg.reset_scenario_settings(lab.endpoint(REPLICA), lab.creds)
    _replicated(lab)
    assert api_client.update(api.base_url, product["id"], "Keyboard", 2999).status_code == 200
    window_without_delay = _stale_window_ms(api, product["id"], 2999, timeout=5)
    measure("stale_window_ms_no_delay", round(window_without_delay, 1), "ms")
    assert window_without_delay < delay_ms


@pytest.mark.parametrize("guard", ["off", "on"])
def test_stale_fill_race_after_put(lab, api, measure, guard):
    """The race the brief hides: a miss right after PUT refills Redis from a lagging replica.

    Guard off (the brief's cache-aside), the old value is cached for a whole TTL,
    far beyond the replication lag. Guard on, the API checks that the replica has
    replayed the key's last write before it fills the cache, so reads are never
    stale for longer than the lag (here: not at all, the primary answers).
    """
    ttl_s, delay_ms = 4, 1000
    api.ensure(CACHE_TTL_SECONDS=str(ttl_s), STALE_FILL_GUARD=guard)
    product = _product(lab, api)
    api_client.read(api.base_url, product["id"])  # cached: 4999
    lab.delay_replay(REPLICA, delay_ms)

    assert api_client.update(api.base_url, product["id"], "Keyboard", 3999).status_code == 200
    refill = api_client.read(api.base_url, product["id"])  # the miss that races the replica
    window = _stale_window_ms(api, product["id"], 3999, timeout=ttl_s * 3)
    measure("race_guard", guard)
    measure("cache_ttl_s", ttl_s, "s")
    measure("apply_delay_ms", delay_ms, "ms")
    measure("race_stale_window_ms", round(window, 1), "ms")
    if guard == "off":
        assert refill.body["price_cents"] == 4999 and refill.node == "replica"
        assert window > delay_ms + 1000, "the old value should outlive the replication lag, for about a TTL"
    else:
        assert refill.body["price_cents"] == 3999 and refill.node == "primary"
        assert window <= delay_ms, "with the guard, staleness is bounded by the replication lag"


def test_latency_and_db_queries_before_and_after_the_cache(lab, api, measure):
    """The brief's 'mesures avant/après cache': same reads, cache off then warm."""
    requests_per_mode = 300
    ids = [_product(lab, api, f"p{i}", 100 + i)["id"] for i in range(10)]
    samples: dict[str, list[float]] = {}
    queries: dict[str, float] = {}
    for mode, settings in (("cache_off", {"CACHE_ENABLED": "false"}), ("cache_warm", {})):
        api.ensure(**settings)
        with requests.Session() as session:
            for product_id in ids:  # warm the cache (and the connections) before measuring
                api_client.read(api.base_url, product_id, session)
            before = api.metric("db_queries_total")
            reads = [api_client.read(api.base_url, ids[i % len(ids)], session) for i in range(requests_per_mode)]
        queries[mode] = api.metric("db_queries_total") - before
        assert all(r.status == 200 for r in reads)
        samples[mode] = [r.latency_ms for r in reads]
        measure(f"get_p50_ms_{mode}", round(percentile(samples[mode], 50), 3), "ms")
        measure(f"get_p95_ms_{mode}", round(percentile(samples[mode], 95), 3), "ms")
        measure(f"db_queries_{mode}", int(queries[mode]))
    measure("requests_measured", requests_per_mode)
    REPORTS.mkdir(parents=True, exist_ok=True)
    data = REPORTS / "latency_samples.json"
    data.write_text(json.dumps(samples))
    measure.attach("latency_samples", str(data.relative_to(REPORTS.parent.parent)))
    assert queries["cache_off"] >= requests_per_mode, "every uncached read must reach the database"
    assert queries["cache_warm"] == 0, "a warm cache must answer every read without the database"
