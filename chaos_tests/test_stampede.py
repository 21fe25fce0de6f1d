"""Bonus: anti cache-stampede (single flight, a Redis load lock, XFetch early refresh).

Every database read is counted by PostgreSQL itself (pg_stat_statements on each node),
so the figures are what the database saw, whatever the API or the clients believe.
"""

from __future__ import annotations

import asyncio
import http.client
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from chaoslab import api_client
from chaoslab.api_server import ApiServer
from chaoslab.checkers import percentile
from chaoslab.topology import REDIS, REPLICA
from chaoslab.waits import wait_until

pytestmark = pytest.mark.stampede

BURST = 150  # concurrent GETs on one cold key


def _product(lab, api, name="Keyboard", price=4999) -> dict:
    product = api_client.create(api.base_url, name, price)
    lab.wait_caught_up()
    return product


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, done_at: float) -> None:
        self.status, self.headers, self.body, self.done_at = status, headers, body, done_at


def _burst(base_url: str, path: str, count: int, *, also: list[str] = (), timeout: float = 15,
           sent: threading.Event | None = None) -> list[Reply]:
    """``count`` GETs that reach the server together. Every connection is opened and
    served once first (``GET /products/0``, refused by validation before the cache
    or a database), so the server is already reading each one; then the requests
    are written in one tight loop (about a millisecond in all, far less than one
    database read), then the answers are read. With ``also`` (other API processes),
    the GETs are spread over every server, interleaved."""
    servers = [urlsplit(url) for url in (base_url, *also)]
    sockets, requests_ = [], []
    try:
        for i in range(count):
            address = servers[i % len(servers)]
            sock = socket.create_connection((address.hostname, address.port), timeout=timeout)
            sockets.append(sock)
            sock.sendall(f"GET /products/0 HTTP/1.1\r\nHost: {address.netloc}\r\n\r\n".encode())
            warm = http.client.HTTPResponse(sock)
            warm.begin()
            warm.read()
            assert warm.status == 400, f"warm-up GET /products/0 answered {warm.status}"
            requests_.append(f"GET {path} HTTP/1.1\r\nHost: {address.netloc}\r\nConnection: close\r\n\r\n".encode())
        for sock, request in zip(sockets, requests_):
            sock.sendall(request)
        if sent is not None:
            sent.set()
        replies = []
        for sock in sockets:
            response = http.client.HTTPResponse(sock)
            response.begin()
            body = response.read()
            replies.append(Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body,
                                 time.monotonic()))
        return replies
    finally:
        for sock in sockets:
            sock.close()


def _assert_all_correct(replies: list[Reply], price: int) -> None:
    import json

    bad = [(r.status, r.body[:80]) for r in replies if r.status != 200 or json.loads(r.body)["price_cents"] != price]
    assert bad == [], f"{len(bad)} of {len(replies)} GETs failed or were wrong: {bad[:5]}"


def _cache_headers(replies: list[Reply]) -> str:
    counts: dict[str, int] = {}
    for reply in replies:
        counts[reply.headers.get("x-cache", "?")] = counts.get(reply.headers.get("x-cache", "?"), 0) + 1
    return ",".join(f"{key}:{value}" for key, value in sorted(counts.items()))


@pytest.mark.parametrize("protection", ["on", "off"])
def test_cold_key_burst_reads_the_database_once(lab, api_with, measure, protection):
    """N concurrent GETs on a key missing from the cache: one load, shared, with
    protection; one load per request (nearly) without."""
    api = api_with(STAMPEDE_PROTECTION=protection)
    product = _product(lab, api)  # POST invalidates: the key is cold
    before = lab.product_reads()
    misses_before = api.metric("cache_requests_total", result="miss")
    # The replica frozen until every GET has missed (the API counts each lookup): the burst is
    # concurrent however busy the machine, and no read can fill the key before the last GET
    # looks it up. Resumed well within the API's 2.5 s database deadline.
    lab.fault("pause", REPLICA)
    try:
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(_burst, api.base_url, f"/products/{product['id']}", BURST)
            try:
                wait_until(lambda: api.metric("cache_requests_total", result="miss") - misses_before >= BURST,
                           service="api", expected=f"all {BURST} GETs to miss the cold key", timeout=2,
                           interval=0.02, log=api.log)
            finally:
                lab.fault("resume", REPLICA)
            replies = sent.result()
    finally:
        if lab.is_paused(REPLICA):
            lab.fault("resume", REPLICA)
    reads = lab.product_reads() - before
    measure("concurrent_gets", BURST)
    measure(f"db_reads_cold_key_protection_{protection}", int(reads))
    measure("x_cache", _cache_headers(replies))
    _assert_all_correct(replies, 4999)
    if protection == "on":
        assert reads == 1, f"{BURST} concurrent GETs on a cold key should read the database once, not {reads:.0f}"
    else:
        assert reads >= 10, f"without protection a cold-key burst should stampede the database, saw {reads:.0f} reads"


def test_cold_key_burst_across_two_api_processes_reads_the_database_once(lab, api, measure):
    """Two API processes miss the same cold key at once, while the replica is frozen until
    every GET has missed and one process holds the load lock: the Redis lock makes that one
    load for both; the other waits and serves what it filled."""
    api.ensure()
    other = ApiServer(lab)
    try:
        other.start()
        warm = _product(lab, api, "Mouse", 1999)
        for server in (api, other):  # both processes past their first-request costs
            assert api_client.read(server.base_url, warm["id"]).status == 200
        product = _product(lab, api)
        servers = (api, other)
        lock = f"product:{product['id']}:lock"
        reads_before = lab.product_reads()

        def misses() -> list[float]:
            return [server.metric("cache_requests_total", result="miss") for server in servers]
        misses_before = misses()
        waited_before = sum(server.metric("stampede_events_total", event="lock_waited") for server in servers)
        sent = threading.Event()
        lab.fault("pause", REPLICA)
        try:
            with ThreadPoolExecutor(1) as pool:
                burst = pool.submit(_burst, api.base_url, f"/products/{product['id']}", BURST,
                                    also=[other.base_url], sent=sent)
                # The fault lasts until every GET has looked the key up and one process holds the lock.
                wait_until(lambda: sent.is_set() and lab.redis().exists(lock)
                           and sum(misses()) - sum(misses_before) >= BURST,
                           service="api", expected=f"all {BURST} GETs to miss while {REPLICA} is frozen",
                           timeout=30, interval=0.02, log=api.log)
                lab.fault("resume", REPLICA)
                replies = burst.result()
        finally:
            if lab.is_paused(REPLICA):
                lab.fault("resume", REPLICA)
        reads = lab.product_reads() - reads_before
        per_process = [after - before for after, before in zip(misses(), misses_before)]
        waited = sum(server.metric("stampede_events_total", event="lock_waited") for server in servers) - waited_before
        measure("api_processes", 2)
        measure("concurrent_gets", len(replies))
        measure("db_reads_cold_key_two_processes", reads)
        measure("misses_per_process", ",".join(str(int(m)) for m in per_process))
        measure("processes_that_waited_for_the_lock", int(waited))
        _assert_all_correct(replies, 4999)
        assert all(per_process), f"both processes should have missed the cold key (misses {per_process})"
        assert reads == 1, f"two processes, one cold key: one database read expected, PostgreSQL counted {reads}"
        assert waited == 1, "the process without the lock should have waited for it"
    finally:
        other.close()


def _steady_load(base_url: str, path: str, seconds: float, connections: int, threads: int = 4) -> dict:
    """Keep ``connections`` GETs outstanding at the server for ``seconds``: each
    thread writes one request on each of its keep-alive connections, then reads the
    answers, and again. (A client doing one request at a time per thread would spend
    most of its time in its own Python, and leave the server nearly idle.)"""
    address = urlsplit(base_url)
    deadline = time.monotonic() + seconds
    results: list[tuple[int, list]] = []
    lock = threading.Lock()

    def run(count: int) -> None:
        done, bad = 0, []
        conns = [http.client.HTTPConnection(address.hostname, address.port, timeout=5) for _ in range(count)]
        try:
            while time.monotonic() < deadline:
                for conn in conns:
                    conn.request("GET", path)
                for conn in conns:
                    response = conn.getresponse()
                    body = response.read()
                    done += 1
                    if response.status != 200 or b'"name":"Keyboard"' not in body:
                        bad.append((response.status, body[:80]))
        except Exception as exc:  # recorded, so that the test fails on it
            bad.append((0, repr(exc)[:80]))
        finally:
            for conn in conns:
                conn.close()
            with lock:
                results.append((done, bad))

    workers = [threading.Thread(target=run, args=(connections // threads,), daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 15)
    assert not any(worker.is_alive() for worker in workers), "the load did not stop within its bounds"
    return {"requests": sum(done for done, _ in results), "failed": [b for _, bad in results for b in bad]}


def _hot_key_run(lab, api, seconds: float, connections: int) -> dict:
    """Steady concurrent GETs on one key while PostgreSQL's count of product reads and the
    key's presence in Redis are sampled about every 100 ms; returns the reads per sampling
    window, whether the key was ever missing, the requests made and those that failed."""
    product = _product(lab, api)
    api_client.read(api.base_url, product["id"])  # filled: from now on it only expires
    key = f"product:{product['id']}"
    redis = lab.redis()
    stop = threading.Event()
    with lab.product_read_counter() as counter:
        samples: list[tuple[float, int, bool]] = [(time.monotonic(), counter.count(), bool(redis.exists(key)))]

        def sample() -> None:
            while not stop.wait(0.1):
                samples.append((time.monotonic(), counter.count(), bool(redis.exists(key))))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            load = _steady_load(api.base_url, f"/products/{product['id']}", seconds, connections)
        finally:
            stop.set()
            sampler.join(10)
        samples.append((time.monotonic(), counter.count(), bool(redis.exists(key))))
        # An early refresh started by the last requests may still run in the background (the
        # API counts it as it starts): the total waits until PostgreSQL's count stops moving.
        seen: list[int | None] = [None]

        def no_read_in_flight() -> bool:
            now = counter.count()
            quiet, seen[0] = now == seen[0], now
            return quiet
        wait_until(no_read_in_flight, service="api", expected="the API's background refreshes to finish",
                   timeout=10, interval=0.3, log=api.log)
        total_reads = seen[0] - samples[0][1]
    windows = [(later[1] - earlier[1], later[0] - earlier[0]) for earlier, later in zip(samples, samples[1:])]
    return {
        "reads_per_window": [reads for reads, _ in windows],
        "longest_window_s": max(length for _, length in windows),
        "total_reads": total_reads,
        "key_missing_samples": sum(1 for _, _, present in samples if not present),
        **load,
    }


@pytest.mark.parametrize("protection", ["on", "off"])
def test_hot_key_under_steady_load_has_no_burst_of_reads_at_expiry(lab, api_with, measure, protection):
    """A hot key with a 1 s TTL, with 32 GETs outstanding at all times for 3.5 s (four
    expiries): with protection each expiry costs one read (XFetch's early refresh,
    or the one load after a miss); without, every request in flight at expiry misses.
    The load keeps both cores busy while it lasts, so the shortest TTL (Redis's EX is in
    whole seconds) gives the most expiries for the CPU it costs."""
    ttl_s, seconds = 1, 3.5
    api = api_with(STAMPEDE_PROTECTION=protection, CACHE_TTL_SECONDS=str(ttl_s))
    refreshes_before = api.metric("stampede_events_total", event="early_refresh")
    run = _hot_key_run(lab, api, seconds, connections=32)
    refreshes = api.metric("stampede_events_total", event="early_refresh") - refreshes_before
    expiries = math.ceil(seconds / ttl_s)
    worst = max(run["reads_per_window"])
    measure("cache_ttl_s", ttl_s, "s")
    measure("load_seconds", seconds, "s")
    measure("requests", run["requests"])
    measure(f"db_reads_total_protection_{protection}", run["total_reads"])
    measure(f"max_db_reads_per_100ms_protection_{protection}", worst)
    measure("longest_sampling_window_ms", round(run["longest_window_s"] * 1000, 1), "ms")
    measure("early_refreshes", int(refreshes))
    assert run["failed"] == [], f"reads failed or were wrong: {run['failed'][:5]}"
    assert run["requests"] > 500, "the load was too light to say anything about a stampede"
    if protection == "on":
        assert worst <= 2, f"a burst of {worst} database reads within one ~100 ms window at expiry"
        assert run["total_reads"] <= expiries + 1, (
            f"{run['total_reads']} database reads for {expiries} expiries: more than one load per expiry")
    else:
        assert worst >= 3, f"without protection an expiry under load should stampede; worst window {worst}"


def test_xfetch_refreshes_a_hot_key_before_it_expires(lab, api_with, measure):
    """With a large beta the early refresh is near-certain well before each expiry
    (the window is beta x the measured load time), so the key never goes missing:
    no miss at all while it is read, and each refresh is one database read."""
    ttl_s, seconds = 1, 3.25   # three expiries, as short as the hot key's test above
    api = api_with(CACHE_TTL_SECONDS=str(ttl_s), XFETCH_BETA="100")
    misses_before = api.metric("cache_requests_total", result="miss")
    refreshes_before = api.metric("stampede_events_total", event="early_refresh")
    run = _hot_key_run(lab, api, seconds, connections=8)
    misses = api.metric("cache_requests_total", result="miss") - misses_before - 1  # the warming read
    refreshes = api.metric("stampede_events_total", event="early_refresh") - refreshes_before
    measure("cache_ttl_s", ttl_s, "s")
    measure("xfetch_beta", 100)
    measure("requests", run["requests"])
    measure("early_refreshes", int(refreshes))
    measure("misses_under_load", int(misses))
    measure("db_reads_total", run["total_reads"])
    measure("key_missing_samples", run["key_missing_samples"])
    assert run["failed"] == []
    assert refreshes >= math.floor(seconds / ttl_s), f"expected an early refresh before each expiry, saw {refreshes}"
    assert run["key_missing_samples"] == 0, "the hot key went missing from Redis despite the early refreshes"
    assert misses == 0, f"the API counted {misses} misses despite the early refreshes"
    assert run["total_reads"] == refreshes, (
        f"PostgreSQL counted {run['total_reads']} reads for {refreshes} early refreshes: each refresh should be "
        "one database read, and nothing else read")


def test_a_dead_lock_holder_delays_the_others_at_most_the_lock_lifetime(lab, api_with, measure):
    """A load lock taken by a holder that died (a foreign token nobody will release):
    GETs wait for it, take it over when it expires, and all answer; no deadlock."""
    lock_ttl_ms, margin_ms = 1000, 600
    api = api_with(STAMPEDE_LOCK_TTL_MS=str(lock_ttl_ms))
    product = _product(lab, api)
    lock = f"product:{product['id']}:lock"
    redis = lab.redis()
    before = lab.product_reads()
    assert redis.set(lock, "token-of-a-dead-holder", nx=True, px=lock_ttl_ms)
    locked_at = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        burst = pool.submit(_burst, api.base_url, f"/products/{product['id']}", 50)
        time.sleep(lock_ttl_ms / 2000)  # halfway through the dead holder's lock: nobody may have stolen it
        held_midway = redis.get(lock)
        replies = burst.result()
    answered_ms = [(reply.done_at - locked_at) * 1000 for reply in replies]
    reads = lab.product_reads() - before
    measure("lock_ttl_ms", lock_ttl_ms, "ms")
    measure("first_answer_ms", round(min(answered_ms), 1), "ms")
    measure("last_answer_ms", round(max(answered_ms), 1), "ms")
    measure("db_reads_after_dead_holder", int(reads))
    _assert_all_correct(replies, 4999)
    assert held_midway == "token-of-a-dead-holder", "nobody but its holder may release a lock"
    assert max(answered_ms) <= lock_ttl_ms + margin_ms, "GETs must recover within the lock's lifetime"
    assert min(answered_ms) >= lock_ttl_ms * 0.8, "GETs should have waited for the lock rather than ignore it"
    assert reads == 1, f"after the dead holder's lock expired one request should load, not {reads:.0f}"


def test_the_lock_is_released_only_by_its_holder(lab, api):
    """The service's own Lua scripts against the lab's Redis: take, find busy, find
    the value, and a release with a stale token leaves a later holder's lock alone."""
    from service.breaker import CircuitBreaker
    from service.cache import ProductCache
    from service.metrics import Metrics

    redis = lab.redis()

    async def scenario() -> None:
        breaker = CircuitBreaker("redis", failure_threshold=3, reset_timeout=1.0)
        cache = ProductCache(api.effective_settings(), Metrics(), breaker)
        try:
            assert (await cache.claim(7, "A")).result == "owner"
            assert (await cache.claim(7, "B")).result == "busy"
            redis.set("product:7:lock", "C")  # A's lock expired and C took it
            await cache.release(7, "A")
            assert redis.get("product:7:lock") == "C", "a stale holder released someone else's lock"
            await cache.release(7, "C")
            assert redis.get("product:7:lock") is None
            redis.set("product:7", '{"id":7}')
            claim = await cache.claim(7, "D")
            assert (claim.result, claim.payload) == ("hit", b'{"id":7}')
            assert redis.get("product:7:lock") is None, "a claim that finds the value takes no lock"
        finally:
            await cache.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("fault", ["stop", "pause"])
def test_redis_down_means_no_cache_not_errors(lab, api, measure, fault):
    """With protection on, Redis gone (stopped or frozen): no lock to take, no cache
    to poll; every GET is answered from the database, none fails."""
    api.ensure()
    product = _product(lab, api)
    reads_before = lab.product_reads()
    lab.fault(fault, REDIS)
    try:
        started = time.monotonic()
        replies = _burst(api.base_url, f"/products/{product['id']}", 50)
        later = [api_client.read(api.base_url, product["id"]) for _ in range(20)]
        elapsed_ms = [(reply.done_at - started) * 1000 for reply in replies]
        db_reads = lab.product_reads() - reads_before
    finally:
        lab.fault("resume" if fault == "pause" else "start", REDIS)
    back = time.monotonic()
    # Redis is back: the cache (and the lock) are used again, with no restart of the API.
    wait_until(lambda: api_client.read(api.base_url, product["id"]).cache == "hit", service="api",
               expected="cache hits to resume after Redis came back", timeout=15, interval=0.1, log=api.log)
    measure("cache_back_after_s", round(time.monotonic() - back, 3), "s")
    measure("x_cache", _cache_headers(replies))
    measure("burst_last_answer_ms", round(max(elapsed_ms), 1), "ms")
    measure("p50_ms_after_breaker", round(percentile([r.latency_ms for r in later], 50), 3), "ms")
    measure("db_reads_with_redis_down", db_reads)
    _assert_all_correct(replies, 4999)
    assert all(r.status == 200 and r.body["price_cents"] == 4999 for r in later)
    assert db_reads == len(replies) + len(later), (
        f"{len(replies) + len(later)} GETs with Redis down, PostgreSQL counted {db_reads} reads: each GET must "
        "be answered from the database")
    assert {r.headers.get("x-cache") for r in replies} == {"bypass"}
    assert {r.cache for r in later} == {"bypass"}
