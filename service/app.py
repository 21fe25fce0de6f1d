"""The application factory: ``uvicorn --factory service.app:create_app``.

Nothing is built at import time; every setting comes from the environment when
the factory runs, and connections are opened in the lifespan.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from service import handlers
from service.breaker import CircuitBreaker
from service.cache import ProductCache
from service.db import DatabaseRole
from service.errors import EXCEPTION_HANDLERS
from service.metrics import Metrics, RequestMetricsMiddleware
from service.products import ProductService
from service.settings import Settings

logger = logging.getLogger(__name__)

ROUTES = [
    Route("/products", handlers.ProductCollection),
    Route("/products/{id}", handlers.ProductItem),
    Route("/health", handlers.Health),
    Route("/metrics", handlers.Metrics),
    Route("/openapi.json", handlers.OpenAPI),
]


def create_app(environ: Mapping[str, str] | None = None) -> Starlette:
    settings = Settings.from_env(os.environ if environ is None else environ)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = Metrics()

    def breaker(dependency: str, reset_seconds: float, probe_seconds: float | None = None) -> CircuitBreaker:
        return CircuitBreaker(
            dependency,
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=reset_seconds,
            probe_timeout=probe_seconds,
            on_change=_log_and_export(metrics),
        )

    def db_breaker(role: str) -> CircuitBreaker:
        # A database probe may take a whole attempt to fail (a frozen server, a proxy that
        # retries): past db_breaker_probe_seconds, the next request probes as well.
        return breaker(role, settings.db_breaker_reset_seconds, settings.db_breaker_probe_seconds)

    primary = DatabaseRole("primary", settings.db_write_dsn, settings, metrics, db_breaker("primary"))
    replica = DatabaseRole("replica", settings.db_read_dsn, settings, metrics, db_breaker("replica"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The Redis client binds to the running loop, so it is made here.
        cache = ProductCache(settings, metrics, breaker("redis", settings.redis_breaker_reset_seconds))
        products = app.state.products = ProductService(settings, metrics, primary, replica, cache)
        await primary.open()
        await replica.open()
        previous_gc = _tune_garbage_collector()
        try:
            yield
        finally:
            _restore_garbage_collector(previous_gc)
            await products.close()
            await cache.close()
            await replica.close()
            await primary.close()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(RequestMetricsMiddleware, metrics=metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    return app


# Young-generation collections every this many net allocations, not CPython's 700: a
# GET allocates dozens of short-lived containers (frames, dicts, the ASGI messages),
# and at the default the collector took about a tenth of a cached GET's CPU time.
_GC_YOUNG_THRESHOLD = 7_000


def _tune_garbage_collector() -> tuple[int, int, int]:
    """For the app's lifetime: what startup made (modules, pools, metrics) is frozen out
    of every later collection, and young collections run less often. Returns what to restore."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(previous[0], _GC_YOUNG_THRESHOLD), previous[1], previous[2])
    return previous


def _restore_garbage_collector(previous: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*previous)


def _log_and_export(metrics: Metrics):
    def on_change(dependency, state) -> None:
        logger.warning("circuit breaker %s is now %s", dependency, state.label)
        metrics.breaker_changed(dependency, state)

    return on_change
