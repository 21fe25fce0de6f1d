"""The fault proxy, as the harness drives it: `python -m chaoslab.faultproxy` in a process of
its own, a real TCP echo server behind it, its toxics added and removed through the
Toxiproxy HTTP API while connections are open; and the toxics' validation, as data."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from chaoslab.faultproxy import toxics
from chaoslab.faultproxy.client import ToxiproxyClient
from chaoslab.errors import LabError
from chaoslab.waits import wait_until

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:
            pass   # reset_peer's doing: the proxy resets both sides


@pytest.fixture(scope="module")
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def faultproxy(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("faultproxy") / "faultproxy.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "chaoslab.faultproxy", "--listen", f"127.0.0.1:{port}"],
                                   cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    client = ToxiproxyClient(f"http://127.0.0.1:{port}", str(log))
    try:
        wait_until(client.answers, service="faultproxy", expected="its HTTP API to answer", timeout=15,
                   interval=0.1, log=log)
        yield client
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def link(faultproxy, echo, request):
    """A proxy named after the test in front of the echo server; its port."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:60]
    created = faultproxy.create_proxy(name, "127.0.0.1:0", echo)
    yield name, int(created["listen"].rsplit(":", 1)[1])
    requests.delete(f"{faultproxy.url}/proxies/{name}", timeout=5)


def _connect(port: int, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _round_trip(sock: socket.socket, data: bytes = b"ping") -> tuple[bytes, float]:
    started = time.monotonic()
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def test_with_no_toxic_the_proxy_forwards_both_ways(link):
    with _connect(link[1]) as sock:
        assert _round_trip(sock, b"hello")[0] == b"hello"


def test_latency_is_added_to_open_connections_and_removed_at_run_time(faultproxy, link):
    name, port = link
    with _connect(port) as sock:
        _, before = _round_trip(sock)
        faultproxy.add_toxic(name, "latency", {"latency": 300}, stream="upstream")
        data, slowed = _round_trip(sock)
        faultproxy.remove_toxic(name, "latency_upstream")
        _, after = _round_trip(sock)
    assert data == b"ping"
    assert slowed >= 0.3, f"a 300 ms latency toxic, yet the round trip took {slowed * 1000:.0f} ms"
    assert before < 0.2 and after < 0.2, (before, after)


def test_bandwidth_limits_the_rate(faultproxy, link):
    name, port = link
    faultproxy.add_toxic(name, "bandwidth", {"rate": 100})   # 100 KB/s, on the echo's way back
    with _connect(port, timeout=10) as sock:
        data, seconds = _round_trip(sock, b"x" * 50_000)
    assert len(data) == 50_000
    assert 0.4 <= seconds <= 3, f"50 KB at 100 KB/s took {seconds:.2f} s"


def test_a_timeout_of_0_is_a_blackhole_that_holds_the_data_until_healed(faultproxy, link):
    """Toxiproxy's semantics: nothing goes through, nothing is closed, nothing is dropped: what
    was sent during the blackhole arrives once the toxic is removed, as after a partition that
    TCP rode out."""
    name, port = link
    with _connect(port, timeout=0.5) as sock:
        faultproxy.add_toxic(name, "timeout", {"timeout": 0}, stream="upstream")
        sock.sendall(b"held")
        with pytest.raises(socket.timeout):
            sock.recv(10)   # the connection stays open and nothing comes: a silent partition
        faultproxy.remove_toxic(name, "timeout_upstream")
        sock.settimeout(5)
        assert sock.recv(10) == b"held"
        assert _round_trip(sock, b"back")[0] == b"back"


def test_a_timeout_closes_the_connection_after_its_delay(faultproxy, link):
    name, port = link
    faultproxy.add_toxic(name, "timeout", {"timeout": 200})
    with _connect(port) as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""
    assert 0.15 <= time.monotonic() - started < 3


def test_reset_peer_resets_the_connection(faultproxy, link):
    name, port = link
    faultproxy.add_toxic(name, "reset_peer", {"timeout": 100})
    with _connect(port) as sock:
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_limit_data_closes_after_its_bytes(faultproxy, link):
    name, port = link
    faultproxy.add_toxic(name, "limit_data", {"bytes": 10})
    with _connect(port) as sock:
        sock.sendall(b"0123456789abcdef")
        received = b""
        while chunk := sock.recv(100):
            received += chunk
    assert received == b"0123456789"


def test_slow_close_holds_the_close_back(faultproxy, link):
    name, port = link
    faultproxy.add_toxic(name, "slow_close", {"delay": 300}, stream="upstream")
    with _connect(port) as sock:
        sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        assert sock.recv(10) == b""
    assert time.monotonic() - started >= 0.25


def test_a_disabled_proxy_refuses_and_closes_then_comes_back(faultproxy, link):
    name, port = link
    with _connect(port) as sock:
        faultproxy.set_enabled(name, False)
        assert sock.recv(10) == b""
    with pytest.raises(ConnectionRefusedError):
        _connect(port)
    faultproxy.set_enabled(name, True)
    with _connect(port) as sock:
        assert _round_trip(sock)[0] == b"ping"


def test_reset_removes_every_toxic_and_enables_every_proxy(faultproxy, link):
    name, port = link
    faultproxy.add_toxic(name, "latency", {"latency": 1000})
    faultproxy.set_enabled(name, False)
    faultproxy.reset()
    state = faultproxy.proxies()[name]
    assert state["enabled"] and state["toxics"] == []
    with _connect(port) as sock:
        assert _round_trip(sock)[1] < 0.5


def test_bad_input_gets_a_4xx_naming_the_toxic(faultproxy, link):
    name, _ = link
    with pytest.raises(LabError, match="HTTP 400.*unknown toxic type 'lag'"):
        faultproxy.add_toxic(name, "lag")
    with pytest.raises(LabError, match="HTTP 404: proxy nowhere not found"):
        faultproxy.add_toxic("nowhere", "latency", {"latency": 10})
    faultproxy.add_toxic(name, "latency", {"latency": 10})
    with pytest.raises(LabError, match="HTTP 409.*already exists"):
        faultproxy.add_toxic(name, "latency", {"latency": 10})
    bad = requests.post(f"{faultproxy.url}/proxies/{name}/toxics", data="{not json", timeout=5)
    assert bad.status_code == 400 and bad.json() == {"error": "the body is not JSON", "status": 400}


@pytest.mark.parametrize("body, message", [
    ({"type": "latency", "attributes": {"latency": -5}}, "latency = -5; expected 0 to 600,000 (ms)"),
    ({"type": "latency", "attributes": {"latency": 10**9}}, "expected 0 to 600,000 (ms)"),
    ({"type": "latency", "attributes": {"latency": 1.5}}, "latency must be a whole number"),
    ({"type": "latency", "attributes": {"rate": 5}}, "unknown attribute rate; a latency toxic has latency, jitter"),
    ({"type": "bandwidth"}, "rate must be above 0 (KB/s)"),
    ({"type": "limit_data", "attributes": {"bytes": 0}}, "bytes must be above 0 (bytes)"),
    ({"type": "timeout", "stream": "sideways"}, "stream 'sideways'; expected upstream or downstream"),
    ({"type": "latency", "toxicity": 2}, "toxicity 2; expected a number from 0 to 1"),
    ({"type": "down"}, "`down` is the proxy's enabled: false"),
    ("latency", "a toxic is a JSON object"),
])
def test_a_bad_toxic_is_refused_with_what_was_expected(body, message):
    with pytest.raises(toxics.ToxicError, match=message.replace("(", r"\(").replace(")", r"\)")):
        toxics.parse(body)


def test_a_toxic_takes_toxiproxys_defaults():
    toxic = toxics.parse({"type": "latency", "attributes": {"latency": 100}})
    assert toxic.to_json() == {"name": "latency_downstream", "type": "latency", "stream": "downstream",
                               "toxicity": 1.0, "attributes": {"latency": 100, "jitter": 0}}
