"""Input validation: ids, paging, product bodies."""

from __future__ import annotations

import json

import pytest
from starlette.datastructures import QueryParams

from service.errors import BadRequest, UnprocessableEntity
from service.validation import MAX_BODY_BYTES, parse_page, parse_product, parse_product_id


@pytest.mark.parametrize("raw,value", [("1", 1), ("2147483647", 2147483647), ("007", 7)])
def test_good_ids(raw, value):
    assert parse_product_id(raw) == value


@pytest.mark.parametrize(
    "raw", ["0", "-1", "2147483648", "99999999999999999999999", "abc", "1.5", " 1", "+1", "1_0", "\u0663", "", "1e3"]
)
def test_bad_ids(raw):
    with pytest.raises(BadRequest):
        parse_product_id(raw)


def test_paging_defaults_and_bounds():
    assert parse_page(QueryParams("")) == parse_page(QueryParams("limit=50&after_id=0"))
    page = parse_page(QueryParams("limit=200&after_id=2147483647"))
    assert (page.limit, page.after_id) == (200, 2147483647)


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "limit=", "after_id=-1", "limit=1&limit=2"])
def test_bad_paging(query):
    with pytest.raises(BadRequest):
        parse_page(QueryParams(query))


def _body(document) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "document",
    [
        {"name": "Keyboard", "price_cents": 4999},
        {"name": "x", "price_cents": 0},
        {"name": "é" * 200, "price_cents": 2**31 - 1},
        {"name": "Robert'); DROP TABLE products; --", "price_cents": 1},
    ],
)
def test_good_products(document):
    item = parse_product(_body(document))
    assert (item.name, item.price_cents) == (document["name"], document["price_cents"])


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"name": "x"},
        {"price_cents": 1},
        {"name": "x", "price_cents": 1, "extra": 1},
        {"name": 1, "price_cents": 1},
        {"name": None, "price_cents": 1},
        {"name": "x", "price_cents": True},
        {"name": "x", "price_cents": False},
        {"name": "x", "price_cents": 1.0},
        {"name": "x", "price_cents": "1"},
        {"name": "x", "price_cents": -1},
        {"name": "x", "price_cents": 2**31},
        {"name": "", "price_cents": 1},
        {"name": "x" * 201, "price_cents": 1},
        {"name": "a\x00b", "price_cents": 1},
        [1, 2],
        "text",
        None,
        7,
    ],
    ids=lambda d: repr(d)[:30],
)
def test_invalid_products(document):
    with pytest.raises(UnprocessableEntity):
        parse_product(_body(document))


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{name: 1}", b'{"name":"x","price_cents":NaN}', b'{"name":"x","price_cents":Infinity}', b"\xff\xfe", b"[" * 100_000],
    ids=lambda b: repr(b)[:20],
)
def test_unparseable_bodies(body):
    with pytest.raises(BadRequest):
        parse_product(body)


def test_lone_surrogate_is_refused():
    with pytest.raises(UnprocessableEntity, match="invalid product"):
        parse_product(b'{"name": "a\\ud800", "price_cents": 1}')


def test_every_problem_is_listed():
    with pytest.raises(UnprocessableEntity) as info:
        parse_product(_body({"name": "", "price_cents": True, "x": 1}))
    assert len(info.value.extra["details"]) == 3


def test_body_cap_is_64_kib():
    assert MAX_BODY_BYTES == 64 * 1024
