"""HTTP endpoints: parse the request, call the product service, shape the response.

One endpoint class per path, so a wrong method gets a 405 whose Allow header lists
every method of that path. ``GET /products/{id}`` is the hot path (``make bench``):
its response is built from pre-encoded headers around the bytes Redis returned.
"""

from __future__ import annotations

from typing import ClassVar

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from service.errors import NotFound, error_response
from service.health import health_report
from service.openapi import openapi_document
from service.products import ProductService, encode
from service.validation import parse_page, parse_product_id, read_product

JSON = "application/json"


def _products(request: Request) -> ProductService:
    return request.app.state.products


class Endpoint(HTTPEndpoint):
    """Starlette's HTTPEndpoint with the per-request work done once per class: the
    allowed methods (for 405's Allow header) and the handler of each method."""

    _allowed: ClassVar[list[str]]
    _handlers: ClassVar[dict[str, str]]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        methods = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        cls._handlers = {m: m.lower() for m in methods if getattr(cls, m.lower(), None) is not None}
        if "GET" in cls._handlers and "HEAD" not in cls._handlers:
            cls._handlers["HEAD"] = "get"
        cls._allowed = [m for m in methods if m in cls._handlers]

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self._allowed_methods = self._allowed

    async def dispatch(self) -> None:
        request = Request(self.scope, receive=self.receive, send=self.send)
        name = self._handlers.get(request.method)
        handler = self.method_not_allowed if name is None else getattr(self, name)
        response = await handler(request)
        await response(self.scope, self.receive, self.send)


class RawResponse(Response):
    """A response whose header list is built by the caller, already encoded."""

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]], status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


_JSON_HEADER = (b"content-type", JSON.encode())
_READ_HEADERS = {
    (cache, node): [(b"x-cache", cache.encode()), (b"x-db-node", node.encode()), _JSON_HEADER]
    for cache in ("hit", "miss", "bypass")
    for node in ("replica", "primary", "none")
}


class ProductCollection(Endpoint):
    async def get(self, request: Request) -> Response:
        page = parse_page(request.query_params)
        items, node = await _products(request).list(page)
        next_after_id = items[-1]["id"] if len(items) == page.limit else None
        body = encode({"items": items, "next_after_id": next_after_id})
        return Response(body, media_type=JSON, headers={"X-DB-Node": node})

    async def post(self, request: Request) -> Response:
        item = await read_product(request)
        product = await _products(request).create(item)
        headers = {"Location": f"/products/{product['id']}"}
        return Response(encode(product), status_code=201, media_type=JSON, headers=headers)


class ProductItem(Endpoint):
    async def get(self, request: Request) -> Response:
        product_id = parse_product_id(request.path_params["id"])
        read = await request.app.state.products.get(product_id)
        if read.payload is None:
            headers = {"X-Cache": read.cache, "X-DB-Node": read.node}
            return error_response(404, f"product {product_id} not found", headers=headers)
        # The cached bytes as they are: no JSON decoding or encoding on a hit.
        headers = [(b"content-length", b"%d" % len(read.payload)), *_READ_HEADERS[read.cache, read.node]]
        return RawResponse(read.payload, headers)

    async def put(self, request: Request) -> Response:
        product_id = parse_product_id(request.path_params["id"])
        item = await read_product(request)
        product = await _products(request).update(product_id, item)
        if product is None:
            raise NotFound(f"product {product_id} not found")
        return Response(encode(product), media_type=JSON)

    async def delete(self, request: Request) -> Response:
        product_id = parse_product_id(request.path_params["id"])
        if not await _products(request).delete(product_id):
            raise NotFound(f"product {product_id} not found")
        return Response(status_code=204)


class Health(Endpoint):
    async def get(self, request: Request) -> Response:
        products = _products(request)
        report = await health_report(request.app.state.settings, products.primary, products.replica, products.cache)
        return JSONResponse(report)


class Metrics(Endpoint):
    async def get(self, request: Request) -> Response:
        body, content_type = request.app.state.metrics.render()
        return Response(body, headers={"Content-Type": content_type})


class OpenAPI(Endpoint):
    async def get(self, request: Request) -> Response:
        return JSONResponse(openapi_document())
