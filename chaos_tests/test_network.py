"""Network faults (issue 14) on the API's links to Redis and to HAProxy, and on the
replication link.

The links go through the lab's fault proxy (chaoslab.network); the harness reaches every
service directly, so what Redis holds and what the primary reports are read from them.
A slow link delivers, late; a blackholed one accepts connections and delivers nothing until
it heals: neither refuses anything, so the clients only learn from their own timeouts.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from chaoslab import api_client, checkers, pg, steps
from chaoslab.checkers import percentile
from chaoslab.errors import LabError
from chaoslab.topology import API, HAPROXY, PRIMARY, REDIS, REPLICA, slot_name
from chaoslab.waits import holds_for, wait_until

pytestmark = pytest.mark.network

# Each fault on the link, with what it needs: the latency is three times the API's Redis
# timeout, so that every Redis call of the API times out while Redis itself is fine.
FAULTS = {
    "slow": lambda api: ("latency", {"ms": 3 * api.effective_settings().redis_timeout_ms}),
    "blackhole": lambda api: ("blackhole", {}),
}
# A read with the breaker open pays at most one Redis timeout (a half-open probe) on top of a
# read from the database: its p99 may not exceed the p99 of reads without a cache, measured
# in the same run, plus this many timeouts. (p99 against p99: the machine's own hiccups, on
# these two busy cores, are in both.)
P99_TIMEOUTS = 2
# Past the breaker's first second, at most this share of the API's reads may reach Redis.
MAX_GETS_SHARE = 0.05


def _fault(lab, api, name: str):
    action, parameters = FAULTS[name](api)
    return lambda: lab.fault(action, REDIS, **parameters), lambda: lab.fault("heal", REDIS)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_redis_unreachable_over_the_network_keeps_reads_fast(lab, api, no_cache_api, measure, fault):
    """No 5xx, the breaker opens (reads cost what reads without a cache cost), p99 bounded,
    and once the link heals the cache fills again by itself."""
    apply, heal = _fault(lab, api, fault)
    outage = steps.redis_outage_under_read_load(lab, api, no_cache_api, measure, fault=apply, back=heal,
                                                what=f"the link to Redis {fault}", redis_answers_the_harness=True)
    # From Redis's side: with the breaker open the API leaves Redis alone, but for a probe
    # now and then (one per reset period); a blackhole lets nothing through at all.
    assert outage.redis_gets_while_open <= MAX_GETS_SHARE * outage.reads_while_open, (
        f"with the link to Redis {fault}, Redis still served {outage.redis_gets_while_open} GETs for "
        f"{outage.reads_while_open} reads of the API: the API kept asking Redis (breaker not open?)")
    timeout_ms = api.effective_settings().redis_timeout_ms
    bound = outage.no_cache_p99_ms + P99_TIMEOUTS * timeout_ms
    assert outage.breaker_p99_ms <= bound, (
        f"with the link to Redis {fault}, p99 of reads {outage.breaker_p99_ms:.1f} ms: above the no-cache p99 "
        f"of this run ({outage.no_cache_p99_ms:.1f} ms) plus {P99_TIMEOUTS} Redis timeouts of {timeout_ms} ms")


def test_a_put_while_the_link_to_redis_is_down_leaves_no_stale_value(lab, api, measure):
    """The link cut (`down`: connections closed, new ones refused): the PUT's invalidation cannot
    reach Redis, which keeps the old value (read in Redis itself); once the link is back, no GET
    may serve it. (A blackhole is no such test: it holds the invalidation back, as TCP would,
    and delivers it once healed.)"""
    steps.write_during_redis_outage(lab, api, measure, fault=lambda: lab.fault("down", REDIS),
                                    back=lambda: lab.fault("heal", REDIS), what="the link to Redis down")


# -- the replication link: db-replica's walreceiver connects to db-primary, the WAL flows back ----
REPLICATION_LATENCY_MS = 300


def _replication_lag(lab) -> tuple[float, int]:
    """The replica's replay lag as the primary sees it: (seconds, bytes), from pg_stat_replication."""
    with pg.connect(lab.endpoint(PRIMARY), lab.creds, role="superuser", dbname="postgres") as conn:
        lags = {name: (float(seconds or 0), int(behind or 0)) for name, _, behind, seconds in pg.standby_lags(conn)}
    return lags.get(REPLICA, (0.0, 0))


def _put_latencies_ms(api, product_id: int, count: int) -> list[float]:
    latencies = []
    for price in range(count):
        started = time.monotonic()
        answer = api_client.update(api.base_url, product_id, "Keyboard", 1000 + price)
        latencies.append((time.monotonic() - started) * 1000)
        assert answer.status_code == 200, f"PUT {price}: {answer.status_code} {answer.text[:200]}"
    return latencies


def _stale_while_lagging(lab, api, product_id: int, new_price: int) -> tuple[float, float, int, list]:
    """A PUT, then GETs until the new price: (stale window ms, the primary's largest replay lag
    seen meanwhile in ms and in bytes, what Redis held that was not the new price)."""
    key = f"product:{product_id}"
    lags, held_stale = [], []
    assert api_client.update(api.base_url, product_id, "Keyboard", new_price).status_code == 200
    started = time.monotonic()

    def new_value_served() -> bool:
        lags.append(_replication_lag(lab))
        served = api_client.read(api.base_url, product_id).body.get("price_cents")
        cached = lab.redis().get(key)
        if cached is not None and json.loads(cached)["price_cents"] != new_price:
            held_stale.append(cached)
        return served == new_price
    try:
        wait_until(new_value_served, service="api", expected=f"GET to return {new_price} once the replica replays",
                   timeout=10, interval=0.02, log=api.log)
    except LabError:
        assert not held_stale, f"Redis kept serving an old value after the PUT (the stale-fill guard): {held_stale[-1]}"
        raise
    window_ms = (time.monotonic() - started) * 1000
    return window_ms, max(lag[0] for lag in lags) * 1000, max(lag[1] for lag in lags), held_stale


def test_a_slow_replication_link_delays_the_replica_and_the_stale_window_follows(lab, api, no_cache_api,
                                                                                 measure):
    """The WAL reaches the replica 300 ms late: the primary sees the replica behind, and D4's
    stale window (cache off, reads from the replica) follows the link's delay. With the cache
    on, the API's write-position guard keeps the old value out of Redis all along."""
    product = api_client.create(api.base_url, "Keyboard", 4999)
    lab.wait_caught_up()
    lab.fault_link("latency", REPLICA, PRIMARY, ms=REPLICATION_LATENCY_MS)
    window_ms, lag_ms, lag_bytes, _ = _stale_while_lagging(lab, no_cache_api, product["id"], 3999)
    measure("replication_latency_ms", REPLICATION_LATENCY_MS, "ms")
    measure("stale_window_ms", round(window_ms, 1), "ms")
    measure("replay_lag_ms_max", round(lag_ms, 1), "ms")
    measure("replay_lag_bytes_max", lag_bytes, "B")
    assert REPLICATION_LATENCY_MS * 0.8 <= window_ms <= REPLICATION_LATENCY_MS + 1000, (
        f"a {REPLICATION_LATENCY_MS} ms replication link gave a stale window of {window_ms:.0f} ms")
    assert lag_bytes > 0, "the primary never saw the replica behind while the link was slow"

    api_client.read(api.base_url, product["id"])   # cached, then changed while the replica lags
    _, _, _, held_stale = _stale_while_lagging(lab, api, product["id"], 2999)
    assert not held_stale, f"Redis held an old value while the replica lagged (the stale-fill guard): {held_stale[:2]}"


def test_synchronous_commit_pays_the_replication_link_round_trip(lab, api, measure):
    """With synchronous_commit = remote_apply, a write is acknowledged once the replica applied
    it: a 300 ms link adds about 300 ms to every write."""
    product = api_client.create(api.base_url, "Keyboard", 4999)
    lab.make_synchronous(REPLICA)
    before = percentile(_put_latencies_ms(api, product["id"], 10), 50)
    lab.fault_link("latency", REPLICA, PRIMARY, ms=REPLICATION_LATENCY_MS)
    slowed = percentile(_put_latencies_ms(api, product["id"], 10), 50)
    lab.fault_link("heal", REPLICA, PRIMARY)
    measure("put_p50_ms_sync", round(before, 1), "ms")
    measure("put_p50_ms_sync_slow_link", round(slowed, 1), "ms")
    added = slowed - before
    assert REPLICATION_LATENCY_MS * 0.8 <= added <= REPLICATION_LATENCY_MS + 300, (
        f"a {REPLICATION_LATENCY_MS} ms replication link added {added:.0f} ms to synchronous writes "
        f"(p50 {before:.1f} -> {slowed:.1f} ms)")


CUT_S = 30   # the length; the walsender's and walreceiver's own timeouts (60 s) are not reached


def test_a_cut_replication_link_keeps_the_wal_in_the_slot_and_the_replica_catches_up(lab, api, measure):
    """The replica partitioned from the primary for 30 s under writes: the primary keeps the WAL the replica has not
    confirmed (its slot's restart_lsn stays behind), and once healed the replica replays every
    acknowledged write."""
    primary = lab.endpoint(PRIMARY)
    lab.partition(REPLICA, PRIMARY)
    assert not lab.reaches(REPLICA, PRIMARY), f"the partition left a path from {REPLICA} to {PRIMARY}"
    workload = steps.failover_workload(api, max_seconds=CUT_S, max_ops=20000)
    workload.start()
    assert workload.join(timeout=CUT_S + 20), "the write load did not stop within its bounds"
    retained = pg.query_one(primary, lab.creds,
                            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots "
                            "WHERE slot_name = %s", (slot_name(REPLICA),), role="superuser", dbname="postgres")
    behind = checkers.check_lost_writes(workload.history, steps.present_names(lab, REPLICA))
    lab.heal_network()
    healed = time.monotonic()
    lab.wait_caught_up(timeout=60)
    measure("wal_retained_bytes", int(retained), "B")
    measure("writes_behind_at_heal", behind.lost)
    measure("catch_up_s", round(time.monotonic() - healed, 2), "s")
    assert behind.acked, "no write was acknowledged while the link was cut (the primary needs no replica)"
    assert behind.lost, "the replica had every write while the link was cut: the cut did not hold"
    assert int(retained) > 0, "the primary's slot kept no WAL for the cut-off replica"
    after = checkers.check_lost_writes(workload.history, steps.present_names(lab, REPLICA))
    assert after.lost == 0, f"{after.lost} acknowledged writes never reached the replica after the link healed"


def test_synchronous_writes_with_the_replication_link_cut_are_answered_within_the_deadline(lab, api, measure):
    """Synchronous replication and the link blackholed: a commit waits for a standby it cannot
    reach. The API answers within its own deadline (no hang), and never says the write is
    safe: PostgreSQL ends the wait at statement_timeout with the row committed on the primary
    only, so the answer is "outcome unknown" (504), not a success and not a refusal. Once the
    link heals, writes are acknowledged again and the row is on both nodes."""
    product = api_client.create(api.base_url, "Keyboard", 4999)
    lab.make_synchronous(REPLICA)
    deadline_s = api.effective_settings().db_attempt_timeout_s
    lab.fault_link("blackhole", REPLICA, PRIMARY)
    started = time.monotonic()
    stalled = api_client.update(api.base_url, product["id"], "Keyboard", 3999)
    answered_s = time.monotonic() - started
    lab.fault_link("heal", REPLICA, PRIMARY)
    measure("stalled_write_answer_s", round(answered_s, 2), "s")
    measure("stalled_write_status", stalled.status_code)
    assert answered_s <= deadline_s + 1, f"the API took {answered_s:.1f} s to answer a stalled write"
    assert stalled.status_code == 504 and stalled.json().get("outcome") == "unknown", (
        f"a write whose synchronous standby never confirmed it was answered {stalled.status_code} "
        f"{stalled.text[:200]}: expected 504 with outcome unknown")
    wait_until(lambda: api_client.update(api.base_url, product["id"], "Keyboard", 2999).status_code == 200,
               service="api", expected="writes acknowledged again once the link healed", timeout=15,
               interval=0.2, log=api.log)
    lab.wait_caught_up()
    assert pg.query_one(lab.endpoint(REPLICA), lab.creds, "SELECT price_cents FROM products WHERE id = %s",
                        (product["id"],)) == 2999


REPLICATION_KBPS = 4
BANDWIDTH_LOAD_S = 5


def test_a_throttled_replication_link_lets_the_lag_grow_under_writes_then_catches_up(lab, api, measure):
    """The replication link limited to 4 KB/s each way while the workload writes for 5 s: the
    primary writes WAL faster than the link carries it, so the replica's lag, as the primary
    sees it, grows in bytes and in seconds; once the limit is lifted the replica catches up,
    every acknowledged write on it."""
    lab.fault_link("bandwidth", REPLICA, PRIMARY, kbps=REPLICATION_KBPS)
    workload = steps.failover_workload(api, max_seconds=BANDWIDTH_LOAD_S, max_ops=3000)
    lags = []
    started = time.monotonic()
    workload.start()
    while not workload.join(timeout=0.25):
        lags.append(_replication_lag(lab))
        assert time.monotonic() - started < BANDWIDTH_LOAD_S + 20, "the write load did not stop within its bounds"
    lags.append(_replication_lag(lab))
    behind = checkers.check_lost_writes(workload.history, steps.present_names(lab, REPLICA))
    lab.fault_link("heal", REPLICA, PRIMARY)
    healed = time.monotonic()
    lab.wait_caught_up(timeout=60)
    lag_bytes = [lag[1] for lag in lags]
    measure("replication_kbps", REPLICATION_KBPS, "KB/s")
    measure("replay_lag_bytes_max", max(lag_bytes), "B")
    measure("replay_lag_ms_max", round(max(lag[0] for lag in lags) * 1000, 1), "ms")
    measure("writes_behind_at_heal", behind.lost)
    measure("catch_up_s", round(time.monotonic() - healed, 2), "s")
    assert behind.acked, "no write was acknowledged while the link was throttled"
    assert max(lag_bytes) > 2 * REPLICATION_KBPS * 1024, (
        f"the replica was never more than {max(lag_bytes)} bytes behind: less than two seconds of a "
        f"{REPLICATION_KBPS} KB/s link (was the link throttled?)")
    assert lag_bytes[-1] > lag_bytes[0], f"the lag did not grow under writes: {lag_bytes[0]} then {lag_bytes[-1]} bytes"
    after = checkers.check_lost_writes(workload.history, steps.present_names(lab, REPLICA))
    assert after.lost == 0, f"{after.lost} acknowledged writes never reached the replica after the link healed"


def _primary_sees_replayed(lab, lsn: str) -> bool:
    """Whether the primary's pg_stat_replication says the replica replayed ``lsn`` (its view,
    from the replica's own reports)."""
    return bool(pg.query_one(lab.endpoint(PRIMARY), lab.creds,
                             "SELECT coalesce(bool_or(replay_lsn >= %s::pg_lsn), false) FROM pg_stat_replication "
                             "WHERE application_name = %s", (lsn, REPLICA), role="superuser", dbname="postgres"))


ONE_WAY_S = 2   # how long a one-way partition is watched for what must not happen


@pytest.mark.parametrize("direction", ["from_first", "from_second"], ids=["primary_unheard", "replica_unheard"])
def test_a_one_way_partition_on_replication_misleads_one_side(lab, api, measure, direction):
    """A partition one way only. What the primary sends is lost (primary unheard): the replica
    replays nothing more, and says so (its reports still reach the primary, whose view of the
    lag is right). What the replica sends is lost (replica unheard): the WAL still flows and the
    replica replays every write, but its reports never arrive, so the primary's
    pg_stat_replication still shows it behind: a lag that is not there."""
    lab.wait_caught_up()
    lab.partition(PRIMARY, REPLICA, direction)
    for i in range(10):
        api_client.create(api.base_url, f"one-way-{i}", 100)
    lsn = pg.current_lsn(lab.endpoint(PRIMARY), lab.creds)
    replica = lab.endpoint(REPLICA)
    if direction == "from_first":
        assert holds_for(lambda: not pg.replayed(replica, lab.creds, lsn), seconds=ONE_WAY_S), (
            "the replica replayed WAL that the primary sent while it could not be heard")
        assert not _primary_sees_replayed(lab, lsn), "the primary believes the replica replayed WAL it never received"
    else:
        lab.wait_replayed(REPLICA, lsn)   # the replica's own word
        assert holds_for(lambda: not _primary_sees_replayed(lab, lsn), seconds=ONE_WAY_S), (
            "the primary saw the replica's progress although every report of the replica was dropped")
    measure("partition_direction", direction)
    lab.heal_network()
    wait_until(lambda: _primary_sees_replayed(lab, lsn), service=PRIMARY,
               expected=f"pg_stat_replication to show the replica at {lsn} once healed", timeout=30, interval=0.2,
               log=lab.log_path(PRIMARY))


# -- the API's link to HAProxy (its writes) ------------------------------------------------------
def test_a_write_whose_answer_is_reset_is_reported_unknown_and_not_duplicated(lab, api, measure):
    """The connection from the API to HAProxy is reset after the primary committed a POST but
    before the answer came back (answers held 1 s on the link, then every connection reset):
    the API cannot know whether it committed, so it says so (502 or 504, outcome unknown), and
    does not send it again on another connection: the row is there, once (read on the primary)."""
    name = f"reset-after-commit-{time.monotonic_ns()}"
    primary = lab.endpoint(PRIMARY)

    def rows() -> int:
        return pg.query_one(primary, lab.creds, "SELECT count(*) FROM products WHERE name = %s", (name,))
    lab.fault_link("latency", API, HAPROXY, ms=1000)
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(requests.post, f"{api.base_url}/products", json={"name": name, "price_cents": 100},
                           timeout=api_client.TIMEOUT_S)
        wait_until(lambda: rows() == 1, service=PRIMARY, expected=f"the POST of {name} committed", timeout=5,
                   interval=0.02)
        lab.fault_link("reset", API, HAPROXY)
        answer = sent.result()
    lab.fault_link("heal", API, HAPROXY)
    measure("reset_write_status", answer.status_code)
    assert answer.status_code in (502, 504) and answer.json().get("outcome") == "unknown", (
        f"a POST committed on the primary whose answer was lost got {answer.status_code} {answer.text[:200]}: "
        "expected 502 or 504 with outcome unknown")
    assert rows() == 1, f"the POST whose answer was lost is on the primary {rows()} times"


# -- HAProxy's link to the primary: cut off from HAProxy, but alive --------------------------------
SPLIT_WRITES = 20


def _names_on(lab, node: str, prefix: str) -> dict[int, str] | None:
    """The products rows whose name starts with ``prefix``, as ``node``'s own table has them
    (None if the node does not answer)."""
    try:
        with pg.connect(lab.endpoint(node), lab.creds) as conn:
            return dict(conn.execute("SELECT id, name FROM products WHERE name LIKE %s", (prefix + "%",)).fetchall())
    except psycopg.OperationalError:
        return None


def _write_directly(lab, node: str, names: list[str]) -> int:
    """A client that still reaches ``node`` directly (another application server with a DSN that
    names it, not HAProxy): one INSERT per name on a connection of its own; returns how many
    were acknowledged."""
    acked = 0
    for name in names:
        try:
            with pg.connect(lab.endpoint(node), lab.creds) as conn:
                conn.execute("INSERT INTO products(name, price_cents) VALUES (%s, 100)", (name,))
            acked += 1
        except psycopg.Error:
            pass   # refused (fenced): what fencing is for
    return acked


@pytest.mark.parametrize("fencing", [None, "stop", "read_only"])
def test_a_primary_cut_off_from_haproxy_then_replaced_is_a_split_brain_unless_fenced(lab, api, measure, fencing):
    """Role-aware config; db-primary partitioned from HAProxy (both ways), and alive. HAProxy
    marks it down (its own `show stat`), the operator promotes db-replica, and HAProxy sends the
    API's writes there. A client that still reaches db-primary directly keeps writing to it: two
    nodes take writes, counted in each node's own table, in two histories (a split brain: the
    direct client's writes are lost once db-primary is rebuilt as a standby). Fencing db-primary
    before the promotion (shut down, or read-only) leaves it no write at all."""
    prefix = f"split-{fencing or 'none'}-{time.monotonic_ns()}"
    lab.use_haproxy_config("role_aware")
    lab.partition(HAPROXY, PRIMARY)
    cut_at = time.monotonic()
    assert not lab.reaches(HAPROXY, PRIMARY), f"the partition left a path from {HAPROXY} to {PRIMARY}"
    wait_until(lambda: PRIMARY not in lab.haproxy_servers_up(), service=HAPROXY,
               expected=f"{PRIMARY} marked down once cut off from HAProxy", timeout=15, interval=0.05,
               log=lab.log_path(HAPROXY))
    measure("haproxy_marked_down_s", round(time.monotonic() - cut_at, 2), "s")
    assert not pg.in_recovery(lab.endpoint(PRIMARY), lab.creds), f"{PRIMARY} is no longer a primary: not cut off but broken"

    if fencing:
        lab.fence(PRIMARY, fencing)
    lab.promote(REPLICA)
    lab.wait_haproxy_routes_writes_to(REPLICA)
    through_haproxy = [api_client.create(api.base_url, f"{prefix}-api-{i}", 100)["id"] for i in range(SPLIT_WRITES)]
    direct_acked = _write_directly(lab, PRIMARY, [f"{prefix}-direct-{i}" for i in range(SPLIT_WRITES)])

    on_old, on_new = _names_on(lab, PRIMARY, prefix) or {}, _names_on(lab, REPLICA, prefix)
    old_writes = sorted(name for name in on_old.values() if name.startswith(f"{prefix}-direct-"))
    measure("writes_on_old_primary", len(old_writes))
    measure("writes_on_new_primary", len(on_new))
    assert sorted(on_new) == sorted(through_haproxy), (
        f"{REPLICA}, the new primary, holds ids {sorted(on_new)} of this test; the API was acknowledged "
        f"{sorted(through_haproxy)}")
    if fencing is None:
        assert direct_acked == len(old_writes) == SPLIT_WRITES, (
            f"unfenced, {PRIMARY} should take every write of a client that reaches it: {direct_acked} acknowledged, "
            f"{len(old_writes)} in its table")
        assert not set(on_old.values()) & set(on_new.values()), "the two primaries share rows written after the split"
    else:
        assert direct_acked == len(old_writes) == 0, (
            f"fenced ({fencing}), {PRIMARY} still took {len(old_writes)} writes ({direct_acked} acknowledged): "
            "the fence did not hold")
