"""The API's promise on bad input: a 4xx with a JSON error, never a 500, never SQL."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.api

SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "psycopg", "Traceback", "syntax error")


def _assert_clean_4xx(response: requests.Response) -> None:
    assert 400 <= response.status_code < 500, f"expected a 4xx, got {response.status_code}: {response.text[:200]}"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str)
    assert not any(word in response.text for word in SQL_WORDS), response.text


@pytest.mark.parametrize("path", ["/products/abc", "/products/-1", "/products/0", "/products/1.5",
                                  "/products/99999999999999999999", "/products/%27%3B%20DROP%20TABLE"])
def test_bad_ids(api, path):
    _assert_clean_4xx(requests.get(api.base_url + path, timeout=10))
    _assert_clean_4xx(requests.put(api.base_url + path, json={"name": "x", "price_cents": 1}, timeout=10))
    _assert_clean_4xx(requests.delete(api.base_url + path, timeout=10))


@pytest.mark.parametrize("body", [
    {},                                                   # missing fields
    {"name": "x"},
    {"price_cents": 1},
    {"name": "x", "price_cents": 1, "extra": True},       # extra field
    {"name": 42, "price_cents": 1},                       # mistyped
    {"name": "x", "price_cents": "1"},
    {"name": "x", "price_cents": True},
    {"name": "x", "price_cents": 1.5},
    {"name": "x", "price_cents": -1},                     # negative price
    {"name": "x", "price_cents": 2**31},                  # out of INT range
    {"name": "", "price_cents": 1},
    {"name": "x" * 10_000, "price_cents": 1},             # over-long name
    {"name": "x'); DROP TABLE products; --", "price_cents": -5},
    [1, 2, 3],                                            # not an object
], ids=lambda body: str(body)[:40])
def test_bad_bodies(api, body):
    _assert_clean_4xx(requests.post(f"{api.base_url}/products", json=body, timeout=10))


@pytest.mark.parametrize("data,content_type", [
    (b"{not json", "application/json"),
    (b"", "application/json"),
    (b"name=x&price_cents=1", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00", "application/json"),
    (b"{" + b'"name": "' + b"x" * (2 * 1024 * 1024) + b'", "price_cents": 1}', "application/json"),  # huge body
])
def test_bodies_that_are_not_json_objects(api, data, content_type):
    response = requests.post(f"{api.base_url}/products", data=data, headers={"Content-Type": content_type},
                             timeout=10)
    _assert_clean_4xx(response)


@pytest.mark.parametrize("query", ["limit=-1", "limit=abc", "limit=100000", "after_id=x"])
def test_bad_paging(api, query):
    _assert_clean_4xx(requests.get(f"{api.base_url}/products?{query}", timeout=10))


def test_unknown_route_and_method_are_json(api):
    _assert_clean_4xx(requests.get(f"{api.base_url}/nope", timeout=10))
    _assert_clean_4xx(requests.patch(f"{api.base_url}/products/1", json={}, timeout=10))


def test_a_quote_in_a_name_is_stored_as_data(api):
    name = "Robert'); DROP TABLE products; --"
    created = requests.post(f"{api.base_url}/products", json={"name": name, "price_cents": 1}, timeout=10)
    assert created.status_code == 201 and created.json()["name"] == name


def test_openapi_document(api):
    document = requests.get(f"{api.base_url}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.")
    assert {"/products", "/products/{id}", "/health", "/metrics"} <= set(document["paths"])
