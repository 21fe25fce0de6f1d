"""HTTP endpoints: parse the request, call the product service, shape the response.

One endpoint class per path, so a wrong method gets a 405 whose Allow header lists
every method of that path.
"""

from __future__ import annotations

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import NotFound, error_response
from service.health import health_report
from service.openapi import openapi_document
from service.products import ProductService, encode
from service.validation import parse_page, parse_product_id, read_product

JSON = "application/json"


def _products(request: Request) -> ProductService:
    return request.app.state.products


class ProductCollection(HTTPEndpoint):
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


class ProductItem(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        product_id = parse_product_id(request.path_params["id"])
        read = await _products(request).get(product_id)
        headers = {"X-Cache": read.cache, "X-DB-Node": read.node}
        if read.payload is None:
            return error_response(404, f"product {product_id} not found", headers=headers)
        return Response(read.payload, media_type=JSON, headers=headers)

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


class Health(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        products = _products(request)
        report = await health_report(request.app.state.settings, products.primary, products.replica, products.cache)
        return JSONResponse(report)


class Metrics(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        body, content_type = request.app.state.metrics.render()
        return Response(body, headers={"Content-Type": content_type})


class OpenAPI(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return JSONResponse(openapi_document())
