"""Input checks for paths, query strings and bodies; each failure is a 4xx ApiError.

The limits here are also what ``service.openapi`` publishes, so the two cannot drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge, UnprocessableEntity, UnsupportedMediaType

INT32_MAX = 2**31 - 1
ID_MIN, ID_MAX = 1, INT32_MAX
PRICE_MIN, PRICE_MAX = 0, INT32_MAX
NAME_MIN_LENGTH, NAME_MAX_LENGTH = 1, 200
# PostgreSQL text cannot hold NUL; saying so in the schema keeps fuzzers honest.
NAME_PATTERN = "^[^\\u0000]*$"
LIMIT_MIN, LIMIT_DEFAULT, LIMIT_MAX = 1, 50, 200
AFTER_ID_MIN, AFTER_ID_DEFAULT = 0, 0
MAX_BODY_BYTES = 64 * 1024
PRODUCT_FIELDS = ("name", "price_cents")

# ASCII digits only: int() would also take ' 7', '+7', '1_000' and non-ASCII digits.
_DIGITS = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True)
class ProductInput:
    name: str
    price_cents: int


@dataclass(frozen=True)
class Page:
    limit: int
    after_id: int


def parse_product_id(raw: str) -> int:
    return _bounded_int(raw, "id", ID_MIN, ID_MAX, BadRequest)


def parse_page(query: QueryParams) -> Page:
    return Page(
        limit=_query_int(query, "limit", LIMIT_DEFAULT, LIMIT_MIN, LIMIT_MAX),
        after_id=_query_int(query, "after_id", AFTER_ID_DEFAULT, AFTER_ID_MIN, INT32_MAX),
    )


async def read_product(request: Request) -> ProductInput:
    _require_json_content_type(request.headers)
    body = await read_body(request, MAX_BODY_BYTES)
    return parse_product(body)


def parse_product(body: bytes) -> ProductInput:
    document = _parse_json(body)
    if not isinstance(document, dict):
        raise UnprocessableEntity("the body must be a JSON object")
    problems: list[str] = []
    missing = [field for field in PRODUCT_FIELDS if field not in document]
    unexpected = sorted(str(key) for key in document if key not in PRODUCT_FIELDS)
    if missing:
        problems.append(f"missing field(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected field(s): {', '.join(unexpected)}")
    if "name" in document:
        problems += _name_problems(document["name"])
    if "price_cents" in document:
        problems += _price_problems(document["price_cents"])
    if problems:
        raise UnprocessableEntity("invalid product", details=problems)
    return ProductInput(name=document["name"], price_cents=document["price_cents"])


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes whatever Content-Length claims."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body must not exceed {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body must not exceed {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _require_json_content_type(headers: Mapping[str, str]) -> None:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("the body must be sent as Content-Type: application/json")


def _parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("the body is empty; a JSON object is required")
    try:
        text = body.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the body is not valid UTF-8 JSON") from None


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, whatever Python's json module accepts.
    raise ValueError(f"{name} is not valid JSON")


def _name_problems(name: Any) -> list[str]:
    if not isinstance(name, str):
        return ["name must be a string"]
    problems = []
    if not NAME_MIN_LENGTH <= len(name) <= NAME_MAX_LENGTH:
        problems.append(f"name must be {NAME_MIN_LENGTH} to {NAME_MAX_LENGTH} characters long")
    if "\x00" in name:
        problems.append("name must not contain NUL characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates from \ud800-style escapes: not storable as UTF-8.
        problems.append("name must be valid Unicode text")
    return problems


def _price_problems(price: Any) -> list[str]:
    # bool is a subclass of int in Python; true is not a price.
    if type(price) is not int:
        return ["price_cents must be an integer"]
    if not PRICE_MIN <= price <= PRICE_MAX:
        return [f"price_cents must be between {PRICE_MIN} and {PRICE_MAX}"]
    return []


def _query_int(query: QueryParams, name: str, default: int, minimum: int, maximum: int) -> int:
    values = query.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise BadRequest(f"query parameter {name} is given more than once")
    return _bounded_int(values[0], name, minimum, maximum, BadRequest)


def _bounded_int(raw: str, name: str, minimum: int, maximum: int, error: type[BadRequest]) -> int:
    if not _DIGITS.fullmatch(raw):
        raise error(f"{name} must be an integer between {minimum} and {maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise error(f"{name} must be an integer between {minimum} and {maximum}")
    return value
