"""TP part D: cache-aside on GET /products/{id}, invalidation, and stale reads."""

from __future__ import annotations

import json

import pytest
import requests

from chaoslab import api_client, pg, steps
from chaoslab.checkers import percentile
from chaoslab.steps import REPORTS_DIR
from chaoslab.topology import REPLICA

pytestmark = pytest.mark.cache



def _product(lab, api, name="Keyboard", price=4999) -> dict:
    product = api_client.create(api.base_url, name, price)
    lab.wait_caught_up()
    return product


def test_miss_then_hit(lab, api):
    """D2's cache-aside, seen from Redis: the miss fills ``product:{id}``, and the next GET is
    served from Redis, as a value planted there shows (the database still holds the old one)."""
    product = _product(lab, api)
    key = f"product:{product['id']}"
    first = api_client.read(api.base_url, product["id"])
    assert (first.status, first.body.get("price_cents")) == (200, 4999)
    cached = lab.redis().get(key)
    assert cached is not None and json.loads(cached)["price_cents"] == 4999, "the miss must fill the key in Redis"
    lab.redis().set(key, json.dumps({**json.loads(cached), "price_cents": 1234}), keepttl=True)
    second = api_client.read(api.base_url, product["id"])
    assert second.body.get("price_cents") == 1234, "a hit must serve what Redis holds, not read the database"
    assert (first.cache, second.cache) == ("miss", "hit"), "the API's own X-Cache header disagrees with Redis"


def test_ttl_in_redis_is_in_the_briefs_range(lab, api, measure):
    """D2: with the default settings, the TTL Redis holds for ``product:{id}`` is 30 to 120 s."""
    product = _product(lab, api)
    api_client.read(api.base_url, product["id"])
    ttl = lab.redis().ttl(f"product:{product['id']}")
    measure("cache_ttl_s", ttl, "s")
    assert 30 <= ttl <= 120, f"product:{product['id']} has a TTL of {ttl} s in Redis; the brief asks for 30 to 120 s"


def test_put_invalidates_the_key(lab, api):
    product = _product(lab, api)
    api_client.read(api.base_url, product["id"])
    key = f"product:{product['id']}"
    assert lab.redis().exists(key)
    response = api_client.update(api.base_url, product["id"], "Keyboard", 3999)
    assert response.status_code == 200
    assert not lab.redis().exists(key), "PUT must delete the cached key"
    lab.wait_caught_up()
    assert api_client.read(api.base_url, product["id"]).body["price_cents"] == 3999


def test_read_after_write_is_stale_while_the_replica_lags_d4(lab, no_cache_api, measure):
    """D4 made deterministic: an apply delay on the replica, a read right after a PUT.

    The cache is off here so that only replication lag is measured; the cache's own
    effect is the race test below.
    """
    api = no_cache_api
    product = _product(lab, api)
    delay_ms = 1500
    lab.delay_replay(REPLICA, delay_ms)

    assert api_client.update(api.base_url, product["id"], "Keyboard", 3999).status_code == 200
    right_after = api_client.read(api.base_url, product["id"])
    assert right_after.body["price_cents"] == 4999, "the lagging replica should still serve the old price"
    window = steps.stale_window_ms(api, product["id"], 3999)
    measure("apply_delay_ms", delay_ms, "ms")
    measure("stale_window_ms", round(window, 1), "ms")
    assert window >= delay_ms * 0.5, "the stale window should reflect the injected apply delay"

    # With the delay removed, reads converge as soon as the replica replays.
    pg.reset_scenario_settings(lab.endpoint(REPLICA), lab.creds)
    lab.wait_caught_up()
    assert api_client.update(api.base_url, product["id"], "Keyboard", 2999).status_code == 200
    window_without_delay = steps.stale_window_ms(api, product["id"], 2999, timeout=5)
    measure("stale_window_ms_no_delay", round(window_without_delay, 1), "ms")
    assert window_without_delay < delay_ms


@pytest.mark.parametrize("guard", ["off", "on"])
def test_stale_fill_race_after_put(lab, api_with, measure, guard):
    """The race the brief hides: a miss right after PUT refills Redis from a lagging replica.

    Guard off (the brief's cache-aside), the old value is cached for a whole TTL,
    far beyond the replication lag. Guard on, the API checks that the replica has
    replayed the key's last write before it fills the cache, so reads are never
    stale for longer than the lag (here: not at all, the primary answers).
    """
    ttl_s, delay_ms = 4, 1000
    api = api_with(CACHE_TTL_SECONDS=str(ttl_s), STALE_FILL_GUARD=guard)
    product = _product(lab, api)
    api_client.read(api.base_url, product["id"])  # cached: 4999
    lab.delay_replay(REPLICA, delay_ms)

    assert api_client.update(api.base_url, product["id"], "Keyboard", 3999).status_code == 200
    refill = api_client.read(api.base_url, product["id"])  # the miss that races the replica
    window = steps.stale_window_ms(api, product["id"], 3999, timeout=ttl_s * 3)
    measure("race_guard", guard)
    measure("ttl_setting_s", ttl_s, "s")
    measure("apply_delay_ms", delay_ms, "ms")
    measure("race_stale_window_ms", round(window, 1), "ms")
    if guard == "off":
        assert refill.body["price_cents"] == 4999 and refill.node == "replica"
        assert window > delay_ms + 1000, "the old value should outlive the replication lag, for about a TTL"
    else:
        assert refill.body["price_cents"] == 3999 and refill.node == "primary"
        assert window <= delay_ms, "with the guard, staleness is bounded by the replication lag"


def test_latency_and_db_reads_before_and_after_the_cache(lab, api, no_cache_api, measure):
    """The brief's 'mesures avant/après cache': the same reads, cache off then warm; the
    database reads are counted by PostgreSQL itself (pg_stat_statements), not by the API."""
    requests_per_mode = 300
    ids = [_product(lab, api, f"p{i}", 100 + i)["id"] for i in range(10)]
    samples: dict[str, list[float]] = {}
    db_reads: dict[str, int] = {}
    for mode, server in (("cache_off", no_cache_api), ("cache_warm", api)):
        with requests.Session() as session:
            for product_id in ids:  # warm the cache (and the connections) before measuring
                api_client.read(server.base_url, product_id, session)
            before = lab.product_reads()
            reads = [api_client.read(server.base_url, ids[i % len(ids)], session) for i in range(requests_per_mode)]
            db_reads[mode] = lab.product_reads() - before
        assert all(r.status == 200 for r in reads)
        samples[mode] = [r.latency_ms for r in reads]
        measure(f"get_p50_ms_{mode}", round(percentile(samples[mode], 50), 3), "ms")
        measure(f"get_p95_ms_{mode}", round(percentile(samples[mode], 95), 3), "ms")
        measure(f"db_reads_{mode}", db_reads[mode])
    measure("requests_measured", requests_per_mode)
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    data = REPORTS_DIR / "latency_samples.json"
    data.write_text(json.dumps(samples))
    measure.attach("latency_samples", data)
    assert db_reads["cache_off"] >= requests_per_mode, "every uncached read must reach the database"
    assert db_reads["cache_warm"] == 0, "a warm cache must answer every read without the database"
