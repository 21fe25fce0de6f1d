"""Bonus: Redis high availability with Sentinel.

The API finds the master through the Sentinels. When the master is killed or
frozen under load, Sentinel promotes the replica; the API keeps answering from
the database meanwhile (no 5xx), then uses the cache again on the new master.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as redis_client

from chaoslab import api_client, checkers, redis_probe, steps
from chaoslab.network import Link
from chaoslab.redis_ha import MASTER_NAME, SENTINEL_TIMINGS
from chaoslab.waits import holds_for, wait_until

pytestmark = pytest.mark.sentinel


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_master_failover_under_load(lab, api_with, redis_ha, measure, fault):
    api = api_with(REDIS_SENTINELS=redis_ha.sentinel_setting(), REDIS_SENTINEL_MASTER=MASTER_NAME)
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


# -- the master cut off from the Sentinels, alive and reachable by clients ---------------------------
# The guard: the master refuses writes unless one replica acknowledged its stream this recently.
GUARD_MAX_LAG_S = 1
# What a guarded master may still acknowledge, then lose, is bounded by the max lag, plus a
# second: Redis recounts its good replicas in replicationCron, once a second.
LOSS_BOUND_S = GUARD_MAX_LAG_S + 1
# Writes go on this long after the promotion: past the bound, where the two cases differ.
WRITES_AFTER_PROMOTION_S = LOSS_BOUND_S + 1


class _DirectWriter:
    """A client that still reaches one Redis node directly (an application that kept the master's
    address): one SET of a fresh key every few ms, each acknowledged, refused or failed at a
    monotonic time. Bounded: it stops when told, or after ``limit_s``."""

    def __init__(self, client, limit_s: float = 60) -> None:
        self.client, self.limit_s = client, limit_s
        self.acked: list[tuple[str, float]] = []
        self.refused: list[float] = []   # NOREPLICAS: the guard's answer
        self.failed: list[str] = []      # anything else: the client cut off, or a bug
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stop.is_set() and time.monotonic() - started < self.limit_s:
            key = f"split:{n}"
            n += 1
            try:
                self.client.set(key, "x")
                self.acked.append((key, time.monotonic()))
            except redis_client.RedisError as exc:
                if "NOREPLICAS" in str(exc):
                    self.refused.append(time.monotonic())
                else:
                    self.failed.append(f"{key}: {exc}")
            self._stop.wait(0.01)

    def __enter__(self) -> "_DirectWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.network
@pytest.mark.parametrize("guard", [None, "min_replicas"], ids=["unguarded", "min_replicas"])
def test_a_master_cut_off_from_the_sentinels_is_replaced_and_its_writes_lost_unless_guarded(
        redis_ha, measure, guard):
    """The master is cut off (packets dropped) from the three Sentinels only: they fail over to
    the replica, while a client that still reaches the old master keeps writing to it. Unguarded,
    the old master acknowledges every write of that client after the promotion, and once the
    partition heals the Sentinels turn it into a replica of the new master, which throws them
    away (Redis's documented loss window). Guarded (min-replicas-to-write 1, max lag 1 s), the old
    master refuses them (NOREPLICAS) once its replica left: nothing it acknowledged past
    LOSS_BOUND_S after the promotion is lost. Evidence: each node's own INFO and keys, not the Sentinels' word for the data."""
    old_master = redis_ha.master()
    (new_master,) = [name for name in redis_ha.nodes if name != old_master]
    if guard:
        redis_ha.require_replicas(old_master, 1, GUARD_MAX_LAG_S)
    old, new = (redis_probe.client(redis_ha.node_endpoint(name)) for name in (old_master, new_master))

    with _DirectWriter(old) as writer:
        wait_until(lambda: len(writer.acked) >= 20, service=old_master, expected="writes before the partition",
                   timeout=10, log=redis_ha.log_path(old_master))
        for sentinel in redis_ha.sentinels:
            redis_ha.partition(sentinel, old_master)
        cut_at = time.monotonic()
        wait_until(lambda: redis_ha.role(new_master) == "master", service=new_master,
                   expected=f"promoted by the Sentinels once {old_master} was cut off from them", timeout=30,
                   interval=0.02, log=redis_ha.log_path(new_master))
        promoted_at = time.monotonic()
        # The cut as the network has it (probes that time out: after the promotion, not to delay
        # its observation): the Sentinels no longer reach the old master, its replica still did.
        sources = [*redis_ha.sentinels, new_master]
        with ThreadPoolExecutor(len(sources)) as pool:
            reached = dict(zip(sources, pool.map(lambda source: redis_ha.reaches(source, old_master), sources)))
        assert not any(reached[sentinel] for sentinel in redis_ha.sentinels), (
            f"the partition left a path to {old_master} from {[s for s in redis_ha.sentinels if reached[s]]}")
        assert reached[new_master], f"the partition cut {new_master} from {old_master} too"
        assert redis_ha.role(old_master) == "master", f"{old_master} should still believe it is master"
        wait_until(lambda: time.monotonic() - promoted_at >= WRITES_AFTER_PROMOTION_S, service="harness",
                   expected="the client to write on past the promotion", timeout=WRITES_AFTER_PROMOTION_S + 5)

    redis_ha.heal_network()
    wait_until(lambda: redis_ha.replica_linked(old_master), service=old_master,
               expected=f"turned into a replica of {new_master} by the Sentinels once healed", timeout=60,
               interval=0.1, log=redis_ha.log_path(old_master))
    kept = new.mget([key for key, _ in writer.acked])
    lost = [(key, at) for (key, at), value in zip(writer.acked, kept) if value is None]
    after_promotion = [at for _, at in writer.acked if at > promoted_at]
    lost_past_bound = [key for key, at in lost if at > promoted_at + LOSS_BOUND_S]
    measure("guard", guard or "none")
    measure("promoted_after_cut_s", round(promoted_at - cut_at, 2), "s")
    measure("old_master_acked_after_promotion", len(after_promotion))
    measure("old_master_refused_writes", len(writer.refused))
    measure("direct_writes_lost", len(lost))
    assert not writer.failed, (f"{len(writer.failed)} writes to {old_master} failed, the client was cut off too: "
                               f"{writer.failed[:3]}")
    if guard is None:
        assert after_promotion, f"unguarded, {old_master} should acknowledge writes after {new_master}'s promotion"
        assert lost_past_bound, (
            f"unguarded, the writes {old_master} acknowledged after the promotion should be lost once it rejoins "
            f"as a replica; {len(lost)} of {len(writer.acked)} are")
    else:
        assert writer.refused, f"guarded, {old_master} should refuse writes once its replica left (NOREPLICAS)"
        assert not lost_past_bound, (
            f"guarded, {old_master} acknowledged then lost {len(lost_past_bound)} writes more than "
            f"{LOSS_BOUND_S} s after the promotion: the guard did not hold")


# Sentinel deems a master down once a PING has waited down-after-milliseconds for its answer.
DOWN_AFTER_MS = SENTINEL_TIMINGS["down_after_ms"]
# Long enough for a failover (about 2 to 3 s here), and ten times down-after for a quiet group.
WATCH_S = 10 * DOWN_AFTER_MS / 1000


def _ping_ms(client) -> float:
    """One PING's round trip on ``client``'s connection (opened beforehand: connecting takes more)."""
    started = time.monotonic()
    client.ping()
    return (time.monotonic() - started) * 1000


@pytest.mark.network
@pytest.mark.parametrize("latency_ms", [DOWN_AFTER_MS * 3 // 10, DOWN_AFTER_MS * 3 // 2],
                         ids=["below_down_after", "above_down_after"])
def test_latency_on_the_sentinels_links_to_a_healthy_master(redis_ha, measure, latency_ms):
    """Latency on what the master answers the three Sentinels, and on nothing else: its clients
    and its replica hear it at once. Sentinel judges a master by how long its PING waits for an
    answer: below down-after-milliseconds nothing happens; above it, the Sentinels fail over a
    master that is alive and that a client reaches directly in under half of down-after (a false
    positive: what a down-after shorter than the network's worst round trip costs). Evidence: the nodes' own
    INFO and client lists, a client's direct PING, and a PING through a Sentinel's link."""
    old_master = redis_ha.master()
    (replica,) = [name for name in redis_ha.nodes if name != old_master]
    unserved = redis_ha.sentinel_links_unserved()
    assert not unserved, f"the Sentinels should reach the nodes only through their links' proxies: {unserved}"
    link = redis_ha.fault_links.listen[Link(next(iter(redis_ha.sentinels)), old_master).name]
    direct_ms: list[float] = []
    with redis_probe.client(link, timeout=latency_ms / 1000 + 2) as through_link, \
            redis_probe.client(redis_ha.node_endpoint(old_master)) as direct:
        _ping_ms(through_link)   # both connections open before the fault: connecting takes more round trips
        _ping_ms(direct)
        for sentinel in redis_ha.sentinels:
            redis_ha.fault_link("latency", sentinel, old_master, ms=latency_ms)
        started = time.monotonic()

        def still_a_replica() -> bool:
            direct_ms.append(_ping_ms(direct))
            return redis_ha.role(replica) != "master"
        with ThreadPoolExecutor(1) as pool:
            through_link_ms = pool.submit(_ping_ms, through_link)   # beside the watch, not before it
            quiet = holds_for(still_a_replica, seconds=WATCH_S, interval=0.05)
            watched = time.monotonic() - started
            through_link_ms = through_link_ms.result()
    promoted_after = None if quiet else watched
    measure("sentinel_link_ping_ms", round(through_link_ms, 1), "ms")
    measure("master_ping_ms_max", round(max(direct_ms), 1), "ms")
    if promoted_after is not None:
        measure("spurious_failover_after_s", round(promoted_after, 2), "s")
    assert through_link_ms >= latency_ms, (
        f"a PING through {link} (a Sentinel's link to {old_master}) took {through_link_ms:.0f} ms: the "
        f"{latency_ms} ms latency is not on the link (fault proxy log: {redis_ha.fault_links.log})")
    assert max(direct_ms) < DOWN_AFTER_MS / 2, (
        f"{old_master} should answer a client at once, only its Sentinels' links are slow; "
        f"its slowest PING took {max(direct_ms):.0f} ms")
    if latency_ms < DOWN_AFTER_MS:
        assert promoted_after is None, (
            f"{replica} was promoted {promoted_after:.1f} s after a {latency_ms} ms latency on the Sentinels' "
            f"links, below down-after-milliseconds ({DOWN_AFTER_MS}): nothing should have happened")
    else:
        assert promoted_after is not None, (
            f"the Sentinels should fail over {old_master} once its answers take {latency_ms} ms, over "
            f"down-after-milliseconds ({DOWN_AFTER_MS}); {replica} is still a replica (log: "
            f"{redis_ha.log_path(next(iter(redis_ha.sentinels)))})")
