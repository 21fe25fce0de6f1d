"""Small, explicit HTTP calls to the API under test, shared by the scenarios."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

TIMEOUT_S = 10  # generous: the API's own timeouts must answer long before this


@dataclass(frozen=True)
class Read:
    status: int
    body: dict
    cache: str | None
    node: str | None
    latency_ms: float


def create(base_url: str, name: str, price_cents: int) -> dict:
    response = requests.post(f"{base_url}/products", json={"name": name, "price_cents": price_cents},
                             timeout=TIMEOUT_S)
    assert response.status_code == 201, f"POST /products answered {response.status_code}: {response.text}"
    return response.json()


def update(base_url: str, product_id: int, name: str, price_cents: int) -> requests.Response:
    return requests.put(f"{base_url}/products/{product_id}", json={"name": name, "price_cents": price_cents},
                        timeout=TIMEOUT_S)


def read(base_url: str, product_id: int, session: requests.Session | None = None) -> Read:
    started = time.perf_counter()
    response = (session or requests).get(f"{base_url}/products/{product_id}", timeout=TIMEOUT_S)
    latency_ms = (time.perf_counter() - started) * 1000
    try:
        body = response.json()
    except ValueError:
        body = {"raw": response.text}
    return Read(response.status_code, body, response.headers.get("X-Cache"), response.headers.get("X-DB-Node"),
                latency_ms)
