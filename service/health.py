"""GET /health: each dependency checked directly and in parallel (breakers are
reported, not consulted), each check bounded by HEALTH_TIMEOUT_S."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from psycopg_pool import PoolTimeout

from service import queries
from service.cache import ProductCache
from service.db import DatabaseRole
from service.settings import Settings


async def health_report(
    settings: Settings, primary: DatabaseRole, replica: DatabaseRole, cache: ProductCache
) -> dict[str, Any]:
    timeout = settings.health_timeout_s
    primary_check, replica_check, redis_check = await asyncio.gather(
        _check_database(primary, timeout, expect_recovery=False),
        _check_database(replica, timeout, expect_recovery=True),
        _check_redis(cache, timeout),
    )
    primary_lsn = primary_check.pop("_lsn", None)
    replica_lsn = replica_check.pop("_lsn", None)
    if primary_lsn is not None and replica_lsn is not None and replica_check.get("in_recovery"):
        replica_check["replay_lag_bytes"] = max(0, primary_lsn - replica_lsn)
    checks = {primary.service: primary_check, replica.service: replica_check, "redis": redis_check}
    for name, breaker in ((primary.service, primary.breaker), (replica.service, replica.breaker), ("redis", cache.breaker)):
        checks[name]["breaker"] = breaker.state.label
    return {
        "status": "ok" if all(check["ok"] for check in checks.values()) else "degraded",
        "checks": checks,
        "breakers": {name: check["breaker"] for name, check in checks.items()},
        "config": {
            "replica_down_policy": settings.replica_down_policy,
            "stale_fill_guard": settings.stale_fill_guard,
            "cache_enabled": settings.cache_enabled,
            "cache_ttl_seconds": settings.cache_ttl_seconds,
            "stampede_protection": settings.stampede_protection,
            "redis_client": "redis-py (sentinel)" if settings.redis_sentinels else settings.redis_client,
        },
    }


async def _check_database(role: DatabaseRole, timeout: float, *, expect_recovery: bool) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        position = await role.probe(queries.node_position, timeout)
    except Exception as exc:
        return {"ok": False, "latency_ms": _ms_since(started), "detail": _failure_detail(exc)}
    latency = _ms_since(started)
    check: dict[str, Any] = {"in_recovery": position.in_recovery, "latency_ms": latency, "_lsn": position.lsn}
    if position.in_recovery == expect_recovery:
        check.update(ok=True, detail="standby (in recovery)" if expect_recovery else "primary (accepts writes)")
    elif expect_recovery:
        # Serves reads fine: the read DSN points at a primary (after a promotion?).
        check.update(ok=True, detail="not in recovery: the read DSN reaches a primary")
    else:
        check.update(ok=False, detail="in recovery: the write DSN reaches a read-only standby")
    return {"ok": check.pop("ok"), **check}


async def _check_redis(cache: ProductCache, timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await cache.ping(timeout)
    except Exception as exc:
        ok = not cache.enabled
        return {"ok": ok, "latency_ms": _ms_since(started), "detail": _failure_detail(exc), "cache_enabled": cache.enabled}
    return {
        "ok": True,
        "latency_ms": _ms_since(started),
        "detail": "answers PING",
        "cache_enabled": cache.enabled,
        "pending_invalidations": cache.pending_invalidations,
    }


def _failure_detail(exc: BaseException) -> str:
    # The exception's class only: its message may carry hostnames or DSN fragments.
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(exc, PoolTimeout):
        return "no connection (server down or refusing)"
    return f"error ({type(exc).__name__})"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
