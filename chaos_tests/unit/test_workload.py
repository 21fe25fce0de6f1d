"""The workload against a tiny in-process HTTP API on 127.0.0.1.

The fake API keeps products in a dict and has a ``mode`` switch, so each test
can make it answer, refuse (503) or hang past the client's timeout, and check
that the history says ok, fail or unknown accordingly.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError

from chaoslab.checkers import check_lost_writes, check_workload_reads, longest_write_outage, rto
from chaoslab.history import History
from chaoslab.workload import Workload, classify_exception, classify_response


class FakeApi:
    """In-memory products; ``mode`` is 'ok', '503', 'hang', or 'commit_then_hang'."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.products: dict[int, dict[str, object]] = {}
        self.lock = threading.Lock()
        self.release = threading.Event()  # set at teardown so hung handlers end

    def names(self) -> set[str]:
        with self.lock:
            return {str(p["name"]) for p in self.products.values()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind uvicorn
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid the 40 ms delayed ACK
    server: ApiServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up waiting

    def answer_unless_down(self) -> bool:
        mode = self.server.api.mode
        if mode == "503":
            self.reply(503, {"detail": "primary unavailable"}, {"Retry-After": "1"})
            return False
        if mode == "hang":
            self.server.api.release.wait(10)
            self.close_connection = True
            return False
        return True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.answer_unless_down():
            return
        api = self.server.api
        with api.lock:
            product = {"id": len(api.products) + 1, "name": body["name"], "price_cents": body["price_cents"]}
            product["updated_at"] = "2025-01-01T00:00:00Z"
            api.products[int(product["id"])] = product
        if api.mode == "commit_then_hang":
            api.release.wait(10)
            self.close_connection = True
            return
        self.reply(201, product)

    def do_GET(self) -> None:
        if not self.answer_unless_down():
            return
        match = re.fullmatch(r"/products/(\d+)", self.path)
        with self.server.api.lock:
            product = self.server.api.products.get(int(match.group(1))) if match else None
        if product is None:
            self.reply(404, {"detail": "not found"})
        else:
            self.reply(200, product)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: FakeApi) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.api = api


@pytest.fixture
def api() -> Iterator[tuple[FakeApi, str]]:
    fake = FakeApi()
    server = ApiServer(fake)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll with a deadline: no bare sleep to wait for a state."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        threading.Event().wait(0.005)


def completions(history: History, f: str | None = None) -> list[str]:
    return [done.type for inv, done in history.pairs() if f is None or inv.f == f]


# --- against the fake API ------------------------------------------------------


def test_healthy_api_gives_ok_ops_and_the_run_stops_at_max_ops(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    wl = Workload(url, writers=2, readers=1, max_ops=40, max_seconds=20, pause_between_ops=0.001, name_prefix="t1-w")

    wl.start()
    assert wl.join(timeout=15), "the workload did not stop by itself at max_ops"

    h = wl.history
    assert len(h.pairs()) == 40
    assert h.pending() == []
    assert set(completions(h)) == {"ok"}
    writes = [inv.value for inv, _ in h.pairs() if inv.f == "write"]
    assert all(re.fullmatch(r"t1-w[01]-\d+", name) for name in writes)
    assert len(set(writes)) == len(writes)
    assert sorted(wl.acked_ids) == sorted(fake.products)
    lost = check_lost_writes(h, fake.names())
    assert (lost.acked, lost.lost, lost.unknown, lost.failed) == (len(writes), 0, 0, 0)
    reads = [(inv.value, done.result) for inv, done in h.pairs() if inv.f == "read"]
    assert reads, "the reader never read"
    assert all(fake.products[pid]["name"] == name for pid, name in reads)
    assert check_workload_reads(h, grace=0.0).ok


def test_503_is_a_definite_failure(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.mode = "503"
    # The reader never gets an id to read; it must still end when the budget is spent.
    wl = Workload(url, writers=1, readers=1, max_ops=5, max_seconds=30, pause_between_ops=0)

    with wl:
        assert wl.join(timeout=5)

    errors = [done.error for _, done in wl.history.pairs()]
    assert completions(wl.history) == ["fail"] * 5
    assert errors == ["HTTP 503 (Retry-After: 1)"] * 5
    lost = check_lost_writes(wl.history, fake.names())
    assert (lost.failed, lost.failed_but_present, lost.ok) == (5, 0, True)


def test_a_write_that_hangs_past_the_timeout_is_unknown_and_the_run_ends_at_max_seconds(
    api: tuple[FakeApi, str],
) -> None:
    fake, url = api
    fake.mode = "commit_then_hang"  # the write happens, the answer never comes
    wl = Workload(url, writers=2, readers=0, max_ops=10_000, max_seconds=0.6, request_timeout=0.2)

    started = time.monotonic()
    wl.start()
    assert wl.join(timeout=5)
    elapsed = time.monotonic() - started

    assert elapsed < 0.6 + 0.2 + 0.5, f"ran {elapsed:.2f}s, past max_seconds + request_timeout"
    types = completions(wl.history)
    assert 2 <= len(types) <= 2 * 4  # each writer fits 3 to 4 timeouts of 0.2 s in 0.6 s
    assert set(types) == {"unknown"}
    assert {done.error for _, done in wl.history.pairs()} == {"timeout"}
    lost = check_lost_writes(wl.history, fake.names())
    assert (lost.acked, lost.unknown, lost.unknown_present, lost.ok) == (0, len(types), len(types), True)


def test_a_hung_read_is_unknown(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.mode = "hang"
    wl = Workload(url, writers=0, readers=1, read_ids=[1], max_ops=2, max_seconds=5, request_timeout=0.1)

    with wl:
        assert wl.join(timeout=3)

    assert completions(wl.history, "read") == ["unknown", "unknown"]


def test_refused_connection_is_a_definite_failure() -> None:
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    wl = Workload(f"http://127.0.0.1:{port}", writers=1, readers=0, max_ops=3, max_seconds=5, pause_between_ops=0)

    with wl:
        assert wl.join(timeout=5)

    assert completions(wl.history) == ["fail"] * 3
    assert {done.error for _, done in wl.history.pairs()} == {"could not connect"}


def test_readers_cycle_given_ids_and_a_404_is_an_ok_read_of_nothing(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.products[1] = {"id": 1, "name": "seed", "price_cents": 1}
    wl = Workload(url, writers=0, readers=1, read_ids=[1, 999], max_ops=4, max_seconds=5, pause_between_ops=0)

    with wl:
        assert wl.join(timeout=5)

    reads = [(inv.value, done.type, done.result) for inv, done in wl.history.pairs()]
    assert reads == [(1, "ok", "seed"), (999, "ok", None), (1, "ok", "seed"), (999, "ok", None)]


def test_ops_are_paced(api: tuple[FakeApi, str]) -> None:
    _, url = api
    wl = Workload(url, writers=1, readers=0, max_ops=1000, max_seconds=0.5, pause_between_ops=0.05)

    with wl:
        assert wl.join(timeout=3)

    assert 3 <= len(wl.history.pairs()) <= 11


def test_stop_is_prompt_even_during_a_long_pause(api: tuple[FakeApi, str]) -> None:
    _, url = api
    wl = Workload(url, writers=2, readers=1, max_ops=1_000_000, max_seconds=60, pause_between_ops=5.0)
    wl.start()
    wait_until(lambda: len(wl.history.pairs()) >= 3)  # both writers and the reader are pausing now

    stopped = time.monotonic()
    wl.stop()
    assert wl.join(timeout=2)
    assert time.monotonic() - stopped < 1.0
    assert wl.history.pending() == []


def test_a_503_window_shows_as_recovery_time_and_no_write_is_lost(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    wl = Workload(url, writers=2, readers=1, max_ops=100_000, max_seconds=20, pause_between_ops=0.005)

    def write_types_since(t: float) -> list[str]:
        return [done.type for inv, done in wl.history.pairs() if inv.f == "write" and inv.time >= t]

    with wl:
        wait_until(lambda: write_types_since(0).count("ok") >= 5)
        fault = wl.history.mark("fault").time
        fake.mode = "503"
        wait_until(lambda: "fail" in write_types_since(fault))
        fake.mode = "ok"
        healed = wl.history.mark("heal").time
        wait_until(lambda: "ok" in write_types_since(healed))

    recovered_after = rto(wl.history)
    assert recovered_after is not None and recovered_after > 0
    outage = longest_write_outage(wl.history)
    assert outage is not None and outage > 0
    assert fault + recovered_after >= healed, "no write may succeed while the API answers 503"
    lost = check_lost_writes(wl.history, fake.names())
    assert lost.ok and lost.lost == 0 and lost.failed >= 1 and lost.unknown == 0


# --- classification and arguments ----------------------------------------------


def response(status: int, body: object = None, headers: dict[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    return status, headers or {}, b"" if body is None else json.dumps(body).encode()


@pytest.mark.parametrize(
    ("f", "status", "body", "expected"),
    [
        ("write", 201, {"id": 7, "name": "a"}, ("ok", 7, None)),
        ("write", 201, None, ("ok", None, "HTTP 201 without 'id' in body")),
        ("read", 200, {"id": 7, "name": "a"}, ("ok", "a", None)),
        ("read", 404, {"detail": "x"}, ("ok", None, None)),
        ("write", 404, None, ("fail", None, "HTTP 404")),
        ("write", 422, None, ("fail", None, "HTTP 422")),
        ("write", 500, None, ("fail", None, "HTTP 500")),
        ("write", 502, None, ("unknown", None, "HTTP 502")),
        ("read", 504, None, ("unknown", None, "HTTP 504")),
    ],
)
def test_classify_response(f: str, status: int, body: object, expected: tuple[object, ...]) -> None:
    assert classify_response(f, *response(status, body)) == expected  # type: ignore[arg-type]


def test_classify_exception() -> None:
    assert classify_exception(NewConnectionError(None, "Connection refused")) == ("fail", "could not connect")
    assert classify_exception(ConnectTimeoutError(None, "connect timed out")) == ("fail", "connect timeout")
    assert classify_exception(ReadTimeoutError(None, "/products", "read timed out")) == ("unknown", "timeout")
    assert classify_exception(ProtocolError("Connection aborted", ConnectionResetError()))[0] == "unknown"


def test_a_run_must_be_bounded_and_have_something_to_do() -> None:
    with pytest.raises(ValueError, match="bounded"):
        Workload("http://x", max_ops=0, max_seconds=1)
    with pytest.raises(ValueError, match="bounded"):
        Workload("http://x", max_ops=1, max_seconds=0)
    with pytest.raises(ValueError, match="bounded"):
        Workload("http://x", max_ops=1, max_seconds=float("inf"))
    with pytest.raises(ValueError, match="read_ids"):
        Workload("http://x", writers=0, readers=1, max_ops=1, max_seconds=1)
    default = Workload("http://x", max_ops=1, max_seconds=1)
    other = Workload("http://x", max_ops=1, max_seconds=1)
    assert default.name_prefix != other.name_prefix  # runs sharing a database do not mix
