"""The OpenAPI document: well-formed, complete for the app's routes, and in step
with the validation limits (schemathesis fuzzes from it)."""

from __future__ import annotations

import json
import re

import pytest

from service import validation as v
from service.app import ROUTES
from service.openapi import openapi_document

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def document() -> dict:
    # A JSON round trip: what is served must be plain JSON.
    return json.loads(json.dumps(openapi_document()))


def _resolve(document: dict, ref: str) -> dict:
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_header(document):
    assert re.fullmatch(r"3\.0\.\d+", document["openapi"])
    assert document["info"]["title"] and document["info"]["version"]


def test_every_ref_resolves(document):
    refs = [node["$ref"] for node in _walk(document) if "$ref" in node]
    assert refs
    for ref in refs:
        _resolve(document, ref)


def test_every_route_and_method_is_documented(document):
    for route in ROUTES:
        assert route.path in document["paths"], route.path
        documented = {m for m in document["paths"][route.path] if m in HTTP_METHODS}
        implemented = {m for m in HTTP_METHODS if hasattr(route.endpoint, m)}
        assert documented == implemented, route.path


def test_operations_are_complete(document):
    ids = []
    for path, item in document["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            ids.append(operation["operationId"])
            assert operation["responses"], (method, path)
            for code in operation["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", code), code
            parameters = [
                _resolve(document, p["$ref"]) if "$ref" in p else p
                for p in item.get("parameters", []) + operation.get("parameters", [])
            ]
            assert {p["name"] for p in parameters if p["in"] == "path"} == templated, path
            assert all(p["required"] for p in parameters if p["in"] == "path")
    assert len(ids) == len(set(ids))


def test_bodies_match_validation(document):
    schema = document["components"]["schemas"]["ProductInput"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["name", "price_cents"]
    name, price = schema["properties"]["name"], schema["properties"]["price_cents"]
    assert (name["minLength"], name["maxLength"]) == (v.NAME_MIN_LENGTH, v.NAME_MAX_LENGTH)
    assert re.fullmatch(name["pattern"], "any text") and not re.fullmatch(name["pattern"], "a\x00b")
    assert (price["type"], price["minimum"], price["maximum"]) == ("integer", 0, 2**31 - 1)
    product_id = document["components"]["parameters"]["ProductId"]["schema"]
    assert (product_id["minimum"], product_id["maximum"]) == (1, 2**31 - 1)


def test_write_operations_document_every_error_they_can_return(document):
    for path, method in (("/products", "post"), ("/products/{id}", "put")):
        operation = document["paths"][path][method]
        assert operation["requestBody"]["required"] is True
        assert {"400", "413", "415", "422", "503"} <= set(operation["responses"])
    unavailable = document["components"]["responses"]["ServiceUnavailable"]
    assert "Retry-After" in unavailable["headers"]


def test_read_headers_are_documented(document):
    headers = document["paths"]["/products/{id}"]["get"]["responses"]["200"]["headers"]
    assert headers["X-Cache"]["schema"]["enum"] == ["hit", "miss", "bypass"]
    assert headers["X-DB-Node"]["schema"]["enum"] == ["replica", "primary", "none"]
