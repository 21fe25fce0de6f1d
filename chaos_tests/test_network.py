"""Network faults on the API's link to Redis (issue 14): Redis slow, or cut off without a word.

The API reaches Redis through the lab's fault proxy (chaoslab.network); the harness reaches
Redis directly, so what Redis holds is read from Redis itself. A slow Redis answers, but
later than the API's Redis timeout; a blackholed one accepts connections and never
answers: neither refuses anything, so the API only learns from its own timeouts.
"""

from __future__ import annotations

import pytest

from chaoslab import steps
from chaoslab.topology import REDIS

pytestmark = pytest.mark.network

# Each fault on the link, with what it needs: the latency is three times the API's Redis
# timeout, so that every Redis call of the API times out while Redis itself is fine.
FAULTS = {
    "slow": lambda api: ("latency", {"ms": 3 * api.effective_settings().redis_timeout_ms}),
    "blackhole": lambda api: ("blackhole", {}),
}
# A read with the breaker open pays at most one Redis timeout (a half-open probe) on top of a
# read from the database: p99 may not exceed the no-cache p50 plus this many timeouts.
P99_TIMEOUTS = 2
# Past the breaker's first second, at most this share of the API's reads may reach Redis.
MAX_GETS_SHARE = 0.05


def _fault(lab, api, name: str):
    action, parameters = FAULTS[name](api)
    return lambda: lab.fault(action, REDIS, **parameters), lambda: lab.fault("heal", REDIS)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_redis_unreachable_over_the_network_keeps_reads_fast(lab, api, measure, fault):
    """No 5xx, the breaker opens (reads cost what reads without a cache cost), p99 bounded,
    and once the link heals the cache fills again by itself."""
    apply, heal = _fault(lab, api, fault)
    outage = steps.redis_outage_under_read_load(lab, api, measure, fault=apply, back=heal,
                                                what=f"the link to Redis {fault}", redis_answers_the_harness=True)
    # From Redis's side: with the breaker open the API leaves Redis alone, but for a probe
    # now and then (one per reset period); a blackhole lets nothing through at all.
    assert outage.redis_gets_while_open <= MAX_GETS_SHARE * outage.reads_while_open, (
        f"with the link to Redis {fault}, Redis still served {outage.redis_gets_while_open} GETs for "
        f"{outage.reads_while_open} reads of the API: the API kept asking Redis (breaker not open?)")
    timeout_ms = api.effective_settings().redis_timeout_ms
    bound = outage.no_cache_p50_ms + P99_TIMEOUTS * timeout_ms
    assert outage.breaker_p99_ms <= bound, (
        f"with the link to Redis {fault}, p99 of reads {outage.breaker_p99_ms:.1f} ms: above the no-cache p50 "
        f"({outage.no_cache_p50_ms:.1f} ms) plus {P99_TIMEOUTS} Redis timeouts of {timeout_ms} ms")


def test_a_put_while_redis_is_cut_off_leaves_no_stale_value(lab, api, measure):
    """A partition: the PUT's invalidation cannot reach Redis, which keeps the old value (read in
    Redis itself); once the link heals, no GET may serve it. (A slow link is no such test: the
    invalidation reaches Redis, only its answer is late.)"""
    apply, heal = _fault(lab, api, "blackhole")
    steps.write_during_redis_outage(lab, api, measure, fault=apply, back=heal, what="the link to Redis blackholed")
