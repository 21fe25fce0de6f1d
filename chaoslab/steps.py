"""Scenario steps that parts E and F and the Patroni and Sentinel bonuses share.

Each of those scenarios drives the API with a workload, breaks something, waits for
the API to answer again and judges the history. The steps are written once here, so
that a scenario reads as the brief's steps, and every failover is measured and judged
by the same definitions (chaoslab.checkers): an RTO of part F and an RTO of Patroni
are the same figure, and the report may compare them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from . import api_client, checkers, pg
from .checkers import FailoverFigures, LostWritesResult, ReadsResult, WorkloadReadsResult, percentile
from .history import History
from .phases import phase
from .waits import wait_until
from .workload import Workload

REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports" / "data"
# F4: writes must come back through the unchanged API within this, retried until then.
WRITE_DEADLINE_S = 30
# How long a reader may still miss an acknowledged write: the replication lag, with a
# wide margin (it is about 10 ms on this lab); a replica that stopped replaying, or a
# cached "not found", stays wrong far longer.
READ_GRACE_S = 1.0


# -- the workload and the API ----------------------------------------------------------------
def post_product(api, name: str) -> requests.Response:
    """One write through the API, as a student would make it with curl."""
    return requests.post(f"{api.base_url}/products", json={"name": name, "price_cents": 100},
                         timeout=api_client.TIMEOUT_S)


# Each thread of a failover's workload waits this long between two requests. Every request
# costs CPU in the harness, the fault proxy's links, the API, HAProxy and PostgreSQL, and the
# workload runs through every failover, Patroni's included (most of their length is waiting
# on leases): at 10 ms it was the largest share of `make test`'s CPU on two cores, at 20 ms
# still a quarter of test_patroni.py's (README, "Where the time goes"). With three writers a
# recovery is still seen within about 14 ms on average, and figures are given in seconds.
FAILOVER_PAUSE_S = 0.04

# How many acknowledged writes of a failover's workload a scenario waits for: before the fault
# (a history of writes that the fault could lose), and after each recovery (the workload itself
# writing again, not only the harness's one write). At FAILOVER_PAUSE_S three writers
# acknowledge 50 to 65 writes a second (parts A to F on four workers): each wait is under a second.
ACKS_BEFORE_FAULT = 15
ACKS_AFTER_RECOVERY = 10
# And how many of its reads it judges at least once writes are back: reads of a write acknowledged
# READ_GRACE_S or more before them, which must return it (check_workload_reads). Without this
# wait, a failover over in under a second (F1's refused write 0.4 s, the role-aware switch 0.3 s)
# ended its workload before any read was that old: 0 to 2 reads judged, a check that could hardly fail.
# At FAILOVER_PAUSE_S one reader reads an older write about 12 times a second, few of them old
# enough right after a short outage: 10 took part F's file 42-51 -> 73 s inside `make test`.
READS_JUDGED_AFTER_RECOVERY = 5


def failover_workload(api, *, max_seconds: float = 60, max_ops: int = 4000) -> Workload:
    """Three writers and a reader of the newest acknowledged write, as long as a failover lasts."""
    return Workload(api.base_url, writers=3, readers=1, max_ops=max_ops, max_seconds=max_seconds,
                    request_timeout=3, pause_between_ops=FAILOVER_PAUSE_S)


def read_load(api, ids: list[int], *, seconds: float, readers: int = 4, pause: float = 0.002) -> Workload:
    """Concurrent reads of known products, bounded in time and count."""
    return Workload(api.base_url, writers=0, readers=readers, read_ids=ids, max_ops=20000, max_seconds=seconds,
                    request_timeout=5, pause_between_ops=pause)


def create_products(lab, api, count: int, prefix: str = "item") -> dict[int, str]:
    """``count`` products through the API, replayed on the replica; {id: name}."""
    products = {api_client.create(api.base_url, f"{prefix}-{i}", 100 + i)["id"]: f"{prefix}-{i}"
                for i in range(count)}
    lab.wait_caught_up()
    return products


@phase("workload")
def wait_for_new_acks(workload: Workload, count: int, timeout: float = 20) -> None:
    """Until the workload itself has ``count`` more acknowledged writes than now."""
    target = len(workload.acked_ids) + count
    wait_until(lambda: len(workload.acked_ids) >= target, service="api",
               expected=f"{count} more acknowledged writes from the workload", timeout=timeout)


@phase("workload")
def wait_for_judged_reads(workload: Workload, count: int = READS_JUDGED_AFTER_RECOVERY, timeout: float = 20) -> None:
    """Until the workload has made ``count`` more reads that its reads' check judges (see
    READS_JUDGED_AFTER_RECOVERY): reads that must see a write, not reads it lets miss one."""
    def judged() -> int:
        return checkers.check_workload_reads(workload.history, grace=READ_GRACE_S).judged
    target = judged() + count
    wait_until(lambda: judged() >= target, service="api",
               expected=f"{count} more reads of writes acknowledged {READ_GRACE_S} s or more before them",
               timeout=timeout)


@phase("recovery")
def wait_for_writes_through_api(api, timeout: float = WRITE_DEADLINE_S) -> None:
    """F4: retry a write through the unchanged, un-restarted API until it is acknowledged."""
    wait_until(lambda: post_product(api, "after-failover").status_code == 201, service="api",
               expected="a write through the unchanged API to be acknowledged", timeout=timeout,
               interval=0.1, log=api.log)


@phase("checks")
def present_names(lab, service: str) -> set[str]:
    """The product names ``service`` holds (a node, or HAProxy's write frontend)."""
    with pg.connect(lab.endpoint(service), lab.creds) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM products").fetchall()}


def stale_window_ms(api, product_id: int, new_price: int, timeout: float = 20) -> float:
    """Read right after a PUT until the new value shows; how long reads were stale (D4)."""
    started = time.monotonic()
    wait_until(lambda: api_client.read(api.base_url, product_id).body.get("price_cents") == new_price,
               service="api", expected=f"GET /products/{product_id} to return price {new_price}",
               timeout=timeout, interval=0.02, log=api.log)
    return (time.monotonic() - started) * 1000


def read_latencies_ms(history: History, after: float) -> list[float]:
    """Latencies of the reads invoked at or after ``after`` (monotonic)."""
    return [(done.time - invoke.time) * 1000 for invoke, done in history.pairs()
            if invoke.f == "read" and invoke.time >= after]


# -- evidence ---------------------------------------------------------------------------------
def save_timeline(history: History, request: pytest.FixtureRequest, measure) -> None:
    """The history and its availability timeline beside the JUnit report, attached to the test."""
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(str(request.node.path)).stem}-{request.node.name}").strip("-")
    timeline = REPORTS_DIR / f"timeline-{slug}.json"
    timeline.write_text(json.dumps(checkers.availability_timeline(history, bucket=0.1)))
    history.save(REPORTS_DIR / f"history-{slug}.json")
    measure.attach("timeline", timeline)


@dataclass(frozen=True)
class FailoverVerdict:
    """What a failover scenario's history says, once recorded."""

    lost: LostWritesResult
    figures: FailoverFigures
    reads: WorkloadReadsResult

    def assert_sound(self) -> None:
        """What every failover must show, whatever its kind: writes came back, nothing the API
        refused was committed, and every read answered and saw the writes acknowledged before it."""
        assert self.figures.longest_write_outage_s is not None, "writes through the API never came back"
        assert self.lost.failed_but_present == 0, (
            f"writes the API refused were committed anyway: {list(self.lost.failed_but_present_names[:10])}")
        assert not self.reads.failed, (
            f"{len(self.reads.failed)} reads failed while a node could serve them: "
            f"{[op.error for op in self.reads.failed[:5]]}")
        assert not self.reads.stale, (
            f"{len(self.reads.stale)} reads missed a write acknowledged over {READ_GRACE_S} s before them, up to "
            f"{self.reads.max_stale_age} s after its ack (id, answer, seconds since the ack): {self.reads.stale[:5]}")

    def assert_nothing_lost(self, why: str) -> None:
        assert self.lost.lost == 0, f"{why}: acknowledged writes lost: {list(self.lost.lost_names[:10])}"


@phase("checks")
def judge_failover(history: History, present: set[str], measure, request: pytest.FixtureRequest, *,
                   kind: str, **labels: str) -> FailoverVerdict:
    """Record a failover's figures, by their one definition each, and return the verdict.

    ``kind`` says which failovers its figures may be compared with: ``manual`` (part F),
    ``automatic`` (Patroni after a fault), ``planned`` (a switchover) or ``network`` (Patroni
    after a network fault that writes survive until Patroni reacts: the leader cut off from
    etcd). ``labels`` describe the case (fault, switch, synchronous...). Figures a history
    cannot hold are not recorded, rather than recorded as zero: no RTO without a fault, nor
    after a network fault, where writes go on after it (its outage is the longest one).
    """
    lost = checkers.check_lost_writes(history, present)
    figures = checkers.failover_figures(history)
    reads = checkers.check_workload_reads(history, grace=READ_GRACE_S, lost_names=lost.lost_names)
    save_timeline(history, request, measure)
    measure("failover_kind", kind)
    for name, value in labels.items():
        measure(name, value)
    for name, value in figures.rounded().items():
        if value is not None and not (kind == "network" and name == "rto_s"):
            measure(name, value, checkers.measure(name).unit)
    measure("acked_writes", lost.acked)
    measure("lost_writes", lost.lost)
    measure("unknown_writes", lost.unknown)
    measure("failed_but_present_writes", lost.failed_but_present)
    measure("reads_judged", reads.judged)
    measure("stale_reads", len(reads.stale))
    measure("failed_reads", len(reads.failed))
    return FailoverVerdict(lost, figures, reads)


def record_reads(measure, reads: ReadsResult) -> None:
    """The reads of known products during an outage (parts E, Sentinel): how many, how many failed."""
    measure("reads_total", reads.total)
    measure("failed_reads", len(reads.failed))


def assert_reads_answered(reads: ReadsResult, during: str) -> None:
    assert reads.failed == [], f"reads failed during {during}: {[op.error for op in reads.failed[:5]]}"
    assert reads.wrong == [], f"reads returned wrong values during {during}: {reads.wrong[:5]}"


# -- Redis outages: E1, and the network faults on the API's link to Redis -----------------------------
# With the breaker open, reads may cost at most this many times a read with the cache off.
BREAKER_COST_RATIO = 3.0
# A write must be answered within this whatever Redis does (the API bounds each Redis call).
WRITE_BOUND_S = 2.0


@dataclass
class RedisOutage:
    no_cache_p50_ms: float
    no_cache_p99_ms: float
    breaker_p50_ms: float
    breaker_p99_ms: float
    reads: ReadsResult
    # When Redis itself still answers the harness (a network fault): the GETs Redis served
    # from one second after the fault to the end of the load, and the API's reads meanwhile.
    redis_gets_while_open: int | None = None
    reads_while_open: int = 0


def redis_get_calls(lab) -> int:
    """How many GETs Redis has served since it started, as Redis counts them (INFO commandstats)."""
    return int(lab.redis().info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def redis_outage_under_read_load(lab, api, no_cache_api, measure, *, fault, back, what: str,
                                 redis_answers_the_harness: bool = False) -> RedisOutage:
    """E1's experiment: reads of cached products under load, Redis made unusable by ``fault()``
    (a callable) halfway, then brought back by ``back()``. Asserts that every read is answered
    right, that once the breaker is open reads cost what reads without a cache cost (the same
    reads through ``no_cache_api``, the same API with the cache off), and that the cache is used
    again with no restart of the API. Returns the figures; when Redis still answers the harness
    during the fault, with what Redis saw of the API meanwhile."""
    products = create_products(lab, api, 8)
    no_cache = read_load(no_cache_api, list(products), seconds=1.5).start()
    assert no_cache.join(timeout=20), "the read load did not stop within its bounds"
    # The first half second may grow the API's connection pool (SCRAM logins): not steady state.
    no_cache_latencies = read_latencies_ms(no_cache.history, after=no_cache.history.start + 0.5)
    no_cache_p50 = percentile(no_cache_latencies, 50)

    for product_id in products:  # warm cache
        api_client.read(api.base_url, product_id)
    load = read_load(api, list(products), seconds=3.5).start()
    try:
        wait_until(lambda: len(load.history.ops) > 50, service="api", expected="reads before the fault",
                   timeout=10)
        load.history.mark("fault")
        fault()
        fault_at = load.history.event_time("fault")
        if redis_answers_the_harness:
            # Redis's own count from when the breaker should be open (see below) to the end.
            wait_until(lambda: time.monotonic() >= fault_at + 1.0, service="harness",
                       expected="one second after the fault", timeout=5)
            gets_before = redis_get_calls(lab)
    finally:
        assert load.join(timeout=20), "the read load did not stop by itself within its bounds"

    reads = checkers.check_reads(load.history, products)
    # The breaker opens after a few failures (within 0.5 s even when each pays the
    # timeout); the rest of the run shows its effect.
    open_latencies = read_latencies_ms(load.history, after=fault_at + 1.0)
    outage = RedisOutage(no_cache_p50, percentile(no_cache_latencies, 99), percentile(open_latencies, 50),
                         percentile(open_latencies, 99), reads, reads_while_open=len(open_latencies))
    if redis_answers_the_harness:
        outage.redis_gets_while_open = redis_get_calls(lab) - gets_before
        measure("redis_gets_while_open", outage.redis_gets_while_open)
        measure("reads_while_open", outage.reads_while_open)
    record_reads(measure, reads)
    measure("p50_ms_no_cache", round(outage.no_cache_p50_ms, 3), "ms")
    measure("p99_ms_no_cache", round(outage.no_cache_p99_ms, 3), "ms")
    measure("p50_ms_breaker_open", round(outage.breaker_p50_ms, 3), "ms")
    measure("p99_ms_breaker_open", round(outage.breaker_p99_ms, 3), "ms")
    assert_reads_answered(reads, what)
    assert outage.breaker_p50_ms <= BREAKER_COST_RATIO * no_cache_p50, (
        f"with {what}, reads should cost what reads without a cache cost: p50 {outage.breaker_p50_ms:.1f} ms, "
        f"against {no_cache_p50:.1f} ms with the cache off in this run")
    health = requests.get(f"{api.base_url}/health", timeout=5).json()
    assert health["status"] == "degraded", f"with {what}, /health should say degraded: {health}"

    # Redis comes back: the cache is used again, with no restart of the API.
    back()
    came_back = time.monotonic()
    key = f"product:{next(iter(products))}"
    lab.redis().delete(key)   # whatever Redis kept: the API must fill the key again
    wait_until(lambda: api_client.read(api.base_url, next(iter(products))) and lab.redis().exists(key),
               service="api", expected=f"{key} cached again after {what} ended", timeout=15,
               interval=0.1, log=api.log)
    measure("cache_back_after_s", round(time.monotonic() - came_back, 3), "s")
    return outage


def write_during_redis_outage(lab, api, measure, *, fault, back, what: str) -> None:
    """E1 with a write: Redis holds the old value of a product when ``fault()`` makes it
    unusable; reads go on, then a PUT is answered at once; when ``back()`` ends the outage,
    no GET may serve the old value, whatever Redis kept."""
    product = api_client.create(api.base_url, "Keyboard", 4999)
    lab.wait_caught_up()
    key = f"product:{product['id']}"
    api_client.read(api.base_url, product["id"])
    lab.redis().save()   # the cached old value is on disk too
    fault()
    # Reads go on meanwhile (and open the API's Redis breaker, if it has one): from the database.
    during = [api_client.read(api.base_url, product["id"]).body.get("price_cents") for _ in range(5)]
    assert during == [4999] * 5, f"reads with {what} answered {during}"

    started = time.monotonic()
    put = api_client.update(api.base_url, product["id"], "Keyboard", 3999)
    measure("put_during_outage_ms", round((time.monotonic() - started) * 1000, 1), "ms")
    assert put.status_code == 200, f"a PUT with {what} must succeed, got {put.status_code} {put.text[:200]}"
    assert time.monotonic() - started < WRITE_BOUND_S, "a PUT must not wait for a Redis that does not answer"
    lab.wait_caught_up()
    assert api_client.read(api.base_url, product["id"]).body.get("price_cents") == 3999

    back()
    held = lab.redis().get(key)
    assert held is not None and json.loads(held)["price_cents"] == 4999, \
        f"Redis should come back with the old value after {what}"
    reads: list[api_client.Read] = []

    def redis_used_again() -> bool:
        reads.append(api_client.read(api.base_url, product["id"]))
        return reads[-1].cache != "bypass"
    wait_until(redis_used_again, service="api", expected=f"GETs to use Redis again after {what} ended",
               timeout=15, interval=0.05, log=api.log)
    served = [read.body.get("price_cents") for read in reads]
    assert set(served) == {3999}, f"GETs after {what} ended served {served}: the old value survived the PUT"
    now = lab.redis().get(key)
    assert now is None or json.loads(now)["price_cents"] == 3999, f"Redis still holds the old value: {now}"
