"""The benchmark's yardstick: a bare Starlette endpoint returning constant JSON.

Served by the same uvicorn command as the API, it measures what the server and
the framework cost alone, so the API's figures can be given as ratios of it.
"""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {"id": 1, "name": "Keyboard", "price_cents": 4999, "updated_at": "2026-01-01T00:00:00"}


async def product(request):
    return JSONResponse(BODY)


def create_app() -> Starlette:
    return Starlette(routes=[Route("/products/{id}", product), Route("/health", product)])
