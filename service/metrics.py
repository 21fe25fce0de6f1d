"""Prometheus metrics, on a registry owned by one app so that several apps in one
process (tests) do not clash on the global registry."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.breaker import BreakerState

CACHE_RESULTS = ("hit", "miss", "error", "bypass")
STAMPEDE_EVENTS = ("joined", "lock_acquired", "lock_waited", "served_after_wait", "wait_expired",
                   "early_refresh", "early_refresh_skipped")
DB_ROLES = ("primary", "replica")
DEPENDENCIES = ("redis", "replica", "primary")
UNMATCHED_ROUTE = "<unmatched>"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cache_requests = Counter(
            "cache_requests_total",
            "Cache lookups on GET /products/{id}: hit, miss, error (Redis failed; served from the DB) "
            "or bypass (cache disabled or breaker open).",
            ["result"],
            registry=r,
        )
        self.cache_fills = Counter(
            "cache_fills_total",
            "Cache fills after a miss: stored, rejected (stale-fill guard refused older data) or error.",
            ["result"],
            registry=r,
        )
        self.cache_invalidations = Counter(
            "cache_invalidations_total",
            "Cache invalidations after a write: ok, deferred (Redis unreachable; retried when it is back) "
            "or flushed (a deferred one that went through later).",
            ["result"],
            registry=r,
        )
        self.db_queries = Counter(
            "db_queries_total",
            "SQL round trips issued for product requests, by the role of the node that served them "
            "(pool liveness checks and /health probes are not counted).",
            ["role"],
            registry=r,
        )
        self.read_redirects = Counter(
            "db_read_redirects_total",
            "Reads sent to the primary instead of the replica: replica_unavailable (fallback policy) or "
            "replica_behind (stale-fill guard: the replica has not replayed the key's last write).",
            ["reason"],
            registry=r,
        )
        self.stampede_events = Counter(
            "stampede_events_total",
            "Anti-stampede events on cache misses and hits: joined (a request shared a load already under way "
            "in this process), lock_acquired (this process loads for every process), lock_waited (another "
            "process held the load lock), served_after_wait (the value it loaded was served), wait_expired "
            "(gave up waiting and loaded anyway), early_refresh (XFetch refreshed a value before it expired), "
            "early_refresh_skipped (another process was already loading it).",
            ["event"],
            registry=r,
        )
        self.dependency_failures = Counter(
            "dependency_failures_total",
            "Calls to a dependency that failed (error or timeout); breaker refusals are not counted.",
            ["dependency"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ["dependency"],
            registry=r,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        # Series exist at zero from the start, so a scraper can diff before/after.
        for result in CACHE_RESULTS:
            self.cache_requests.labels(result)
        for role in DB_ROLES:
            self.db_queries.labels(role)
        for event in STAMPEDE_EVENTS:
            self.stampede_events.labels(event)
        for dependency in DEPENDENCIES:
            self.breaker_state.labels(dependency).set(BreakerState.CLOSED)
            self.dependency_failures.labels(dependency)

    def breaker_changed(self, dependency: str, state: BreakerState) -> None:
        self.breaker_state.labels(dependency).set(int(state))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """Times every HTTP request, labelled by the route template (never the raw path,
    whose values are unbounded)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Label children by (method, route) and (method, route, status): labels()
        # takes a lock and builds a tuple on every call; these few are reused.
        self._durations: dict[tuple[str, str], Any] = {}
        self._counts: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            key = (method, route)
            duration = self._durations.get(key)
            if duration is None:
                duration = self._durations[key] = self.metrics.http_duration.labels(method, route)
            duration.observe(time.perf_counter() - started)
            count_key = (method, route, status)
            count = self._counts.get(count_key)
            if count is None:
                count = self._counts[count_key] = self.metrics.http_requests.labels(method, route, str(status))
            count.inc()
