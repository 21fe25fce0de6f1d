"""The API's HTTP contract with every dependency unreachable (a closed 127.0.0.1 port).

No mocks of Redis or PostgreSQL: the real clients fail to connect. Starlette's
TestClient needs httpx, which the project does not install, so a small ASGI driver
below plays the server (lifespan included).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import unquote

import pytest

from service.app import create_app
from service.settings import SettingsError

LEAKS = ("psycopg", "Traceback", "SELECT", "INSERT", "UPDATE", "connection to server", "refused", "127.0.0.1", "secret")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(**overrides: str) -> dict[str, str]:
    port = _closed_port()
    env = {
        "DB_WRITE_DSN": f"postgresql://app:secret@127.0.0.1:{port}/appdb",
        "DB_READ_DSN": f"postgresql://app:secret@127.0.0.1:{port}/appdb",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "DB_POOL_TIMEOUT_S": "0.05",
        "DB_ATTEMPT_TIMEOUT_S": "0.3",
        "REDIS_TIMEOUT_MS": "50",
        "HEALTH_TIMEOUT_S": "0.3",
        "DB_POOL_MIN_SIZE": "0",
    }
    env.update(overrides)
    return env


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class AsgiClient:
    def __init__(self, app) -> None:
        self.app = app

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        chunks: Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        path, _, query = target.partition("?")
        header_list = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if body is not None and not any(k == b"content-length" for k, _ in header_list):
            header_list.append((b"content-length", str(len(body)).encode()))
        messages = [{"type": "http.request", "body": part, "more_body": True} for part in (chunks or [body or b""])]
        messages[-1]["more_body"] = False
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": header_list,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }

        async def receive():
            if messages:
                return messages.pop(0)
            await asyncio.sleep(3600)  # a real server waits for the disconnect

        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        try:
            await self.app(scope, receive, send)
        except Exception:
            # ServerErrorMiddleware re-raises after answering, for the server to log.
            if not sent:
                raise
        start = next(m for m in sent if m["type"] == "http.response.start")
        content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return Reply(start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, content)


@asynccontextmanager
async def running(app):
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.startup.complete"
    try:
        yield AsgiClient(app)
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.shutdown.complete"
        await task


def run(coro):
    return asyncio.run(coro)


def _assert_clean_error(reply: Reply, status: int) -> dict:
    assert reply.status == status, reply
    assert reply.headers["content-type"].startswith("application/json")
    document = reply.json()
    assert isinstance(document.get("error"), str) and document["error"]
    assert not any(word in reply.body.decode() for word in LEAKS), reply.body
    return document


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in metrics")


def test_missing_setting_is_a_clear_startup_error():
    env = _environment()
    del env["DB_READ_DSN"]
    with pytest.raises(SettingsError, match="DB_READ_DSN"):
        create_app(env)


def test_routing_and_input_errors_are_json_4xx():
    async def scenario():
        async with running(create_app(_environment())) as client:
            _assert_clean_error(await client.request("GET", "/nope"), 404)
            reply = await client.request("PATCH", "/products/1")
            _assert_clean_error(reply, 405)
            assert set(reply.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}
            reply = await client.request("DELETE", "/products")
            assert set(_assert_clean_error(reply, 405) and reply.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
            for path in ("/products/abc", "/products/0", "/products/-3", "/products/2147483648", "/products/%27%3B"):
                _assert_clean_error(await client.request("GET", path), 400)
                _assert_clean_error(await client.request("DELETE", path), 400)
            _assert_clean_error(await client.request("GET", "/products?limit=0"), 400)
            json_headers = {"content-type": "application/json"}
            _assert_clean_error(
                await client.request("POST", "/products", body=b'{"name":"x","price_cents":1}', headers={"content-type": "text/plain"}),
                415,
            )
            _assert_clean_error(await client.request("POST", "/products", body=b"{oops", headers=json_headers), 400)
            _assert_clean_error(await client.request("POST", "/products", body=b'{"name":"x"}', headers=json_headers), 422)
            _assert_clean_error(
                await client.request("PUT", "/products/1", body=b'{"name":"x","price_cents":true}', headers=json_headers), 422
            )

    run(scenario())


def test_oversized_bodies_are_413_by_header_and_by_stream():
    async def scenario():
        async with running(create_app(_environment())) as client:
            headers = {"content-type": "application/json", "content-length": str(10 * 1024 * 1024)}
            _assert_clean_error(await client.request("POST", "/products", body=b"{}", headers=headers), 413)
            # No Content-Length (chunked): counted while streaming.
            chunks = [b" " * 16384] * 5
            reply = await client.request("POST", "/products", chunks=chunks, headers={"content-type": "application/json"})
            _assert_clean_error(reply, 413)

    run(scenario())


def test_primary_down_is_a_fast_503_naming_it_with_retry_after():
    async def scenario():
        async with running(create_app(_environment())) as client:
            started = time.monotonic()
            for _ in range(4):  # the breaker opens after 3 failures; the 4th is refused at once
                reply = await client.request(
                    "POST", "/products", body=b'{"name":"x","price_cents":1}', headers={"content-type": "application/json"}
                )
                document = _assert_clean_error(reply, 503)
                assert document["service"] == "db-primary"
                assert int(reply.headers["retry-after"]) >= 1
            assert time.monotonic() - started < 3
            metrics = (await client.request("GET", "/metrics")).body.decode()
            assert _metric(metrics, 'breaker_state{dependency="primary"}') == 1.0

    run(scenario())


@pytest.mark.parametrize("policy", ["fallback", "error"])
def test_replica_down_is_a_503_naming_the_replica(policy):
    async def scenario():
        async with running(create_app(_environment(REPLICA_DOWN_POLICY=policy))) as client:
            reply = await client.request("GET", "/products/1")
            document = _assert_clean_error(reply, 503)
            assert document["service"] == "db-replica"
            assert reply.headers["retry-after"]
            _assert_clean_error(await client.request("GET", "/products"), 503)

    run(scenario())


def test_redis_down_counts_errors_then_the_breaker_bypasses():
    async def scenario():
        async with running(create_app(_environment())) as client:
            for _ in range(5):
                await client.request("GET", "/products/1")
            metrics = (await client.request("GET", "/metrics")).body.decode()
            assert _metric(metrics, 'cache_requests_total{result="error"}') == 3.0
            assert _metric(metrics, 'cache_requests_total{result="bypass"}') == 2.0
            assert _metric(metrics, 'breaker_state{dependency="redis"}') == 1.0

    run(scenario())


def test_health_is_fast_and_degraded():
    async def scenario():
        async with running(create_app(_environment())) as client:
            started = time.monotonic()
            reply = await client.request("GET", "/health")
            assert time.monotonic() - started < 1.5
            assert reply.status == 200
            report = reply.json()
            assert report["status"] == "degraded"
            assert set(report["checks"]) == {"db-primary", "db-replica", "redis"}
            assert all(check["ok"] is False and "detail" in check for check in report["checks"].values())
            assert set(report["breakers"].values()) == {"closed"}
            assert "secret" not in reply.body.decode()

    run(scenario())


def test_metrics_expose_the_promised_series():
    async def scenario():
        async with running(create_app(_environment(CACHE_ENABLED="false"))) as client:
            await client.request("GET", "/products/1")
            await client.request("GET", "/products/x")
            reply = await client.request("GET", "/metrics")
            assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
            text = reply.body.decode()
            for series in (
                *(f'cache_requests_total{{result="{r}"}}' for r in ("hit", "miss", "error", "bypass")),
                'db_queries_total{role="primary"}',
                'db_queries_total{role="replica"}',
                *(f'breaker_state{{dependency="{d}"}}' for d in ("redis", "replica", "primary")),
                'http_request_duration_seconds_count{method="GET",route="/products/{id}"}',
            ):
                _metric(text, series)
            assert _metric(text, 'cache_requests_total{result="bypass"}') == 1.0  # the bad id never reached the cache
            assert _metric(text, 'http_requests_total{method="GET",route="/products/{id}",status="400"}') == 1.0

    run(scenario())


def test_two_apps_in_one_process_do_not_clash():
    first, second = create_app(_environment()), create_app(_environment())
    assert first.state.metrics.registry is not second.state.metrics.registry


def test_an_unexpected_error_is_a_bare_json_500():
    async def scenario():
        app = create_app(_environment())
        async with running(app) as client:

            async def broken(product_id):
                raise RuntimeError("SELECT secret FROM somewhere")

            app.state.products.get = broken
            reply = await client.request("GET", "/products/1")
            assert reply.json() == {"error": "internal error"}
            _assert_clean_error(reply, 500)

    run(scenario())
