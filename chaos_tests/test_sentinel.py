"""Bonus: Redis high availability with Sentinel.

The API finds the master through the Sentinels. When the master is killed or
frozen under load, Sentinel promotes the replica; the API keeps answering from
the database meanwhile (no 5xx), then uses the cache again on the new master.
"""

from __future__ import annotations

import time

import pytest

from chaoslab import api_client, checkers, steps
from chaoslab.redis_ha import MASTER_NAME
from chaoslab.waits import wait_until

pytestmark = pytest.mark.sentinel


def _sentinel_api(api, redis_ha):
    api.ensure(REDIS_SENTINELS=redis_ha.sentinel_setting(), REDIS_SENTINEL_MASTER=MASTER_NAME)
    return api


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_master_failover_under_load(lab, api, redis_ha, measure, fault):
    _sentinel_api(api, redis_ha)
    products = steps.create_products(lab, api, 5)
    some_id = next(iter(products))
    api_client.read(api.base_url, some_id)
    assert api_client.read(api.base_url, some_id).cache == "hit", "the cache should work through Sentinel"
    old_master = redis_ha.master()
    assert redis_ha.master_client().exists(f"product:{some_id}"), "the key should live on the agreed master"

    load = steps.read_load(api, list(products), seconds=30, readers=3, pause=0.005).start()
    try:
        wait_until(lambda: len(load.history.ops) > 30, service="api", expected="reads before the fault", timeout=10)
        load.history.mark("fault")
        faulted = time.monotonic()
        redis_ha.fault(fault, old_master)
        new_master = wait_until(lambda: redis_ha.master() not in (None, old_master) and redis_ha.master(),
                                service="redis-sentinel", expected=f"a new master after {fault} of {old_master}",
                                timeout=30, interval=0.1)
        promoted_after = time.monotonic() - faulted
        # The cache is used again: a read misses once, fills the new master, then hits.
        wait_until(lambda: api_client.read(api.base_url, some_id).cache == "hit", service="api",
                   expected=f"cache hits to resume on the new master {new_master}", timeout=30, interval=0.1,
                   log=api.log)
        hits_after = time.monotonic() - faulted
    finally:
        load.stop()
        assert load.join(timeout=20), "the read load did not stop within its bounds"

    reads = checkers.check_reads(load.history, products)
    measure("fault", fault)
    steps.record_reads(measure, reads)
    measure("sentinel_promotion_s", round(promoted_after, 3), "s")
    measure("cache_hits_resume_s", round(hits_after, 3), "s")
    steps.assert_reads_answered(reads, "the Redis failover")
    assert redis_ha.master_client().exists(f"product:{some_id}")

    # The old master comes back, and Sentinel turns it into a replica of the new one.
    redis_ha.fault("resume" if fault == "pause" else "start", old_master)
    wait_until(lambda: redis_ha.replica_linked(old_master), service=old_master,
               expected=f"to come back as a replica of {new_master}", timeout=60, interval=0.2,
               log=redis_ha.log_path(old_master))
