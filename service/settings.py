"""Settings, read from environment variables only.

Credentials live in the DSNs, which come from the environment and are never logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ReplicaDownPolicy = Literal["fallback", "error"]
RedisClient = Literal["lean", "redis-py"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A missing or malformed environment variable; the message names it."""


@dataclass(frozen=True)
class Settings:
    db_write_dsn: str
    db_read_dsn: str
    redis_url: str
    cache_enabled: bool = True
    cache_ttl_seconds: int = 60
    replica_down_policy: ReplicaDownPolicy = "fallback"
    stale_fill_guard: bool = True
    # Must outlive the replica lag plus one request, so reads still in flight
    # when a write lands cannot put the old row back.
    lsn_marker_ttl_seconds: int = 300
    redis_timeout_ms: int = 100
    # libpq takes whole seconds and psycopg enforces libpq's 2 s floor.
    db_connect_timeout_s: int = 2
    db_pool_timeout_s: float = 2.0
    # A connection the API opens itself once the server was lost (service.db): a local
    # server answers in milliseconds, a proxy retrying a dead one not before its retries end.
    db_direct_connect_timeout_s: float = 0.4
    db_statement_timeout_ms: int = 2000
    # Client-side bound on one database attempt (getting a connection and running
    # its statements): a SIGSTOPped server accepts TCP but never answers, and a
    # server-side statement_timeout cannot fire in a stopped process.
    db_attempt_timeout_s: float = 2.5
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    breaker_failure_threshold: int = 3
    # Short: a database that refuses connections costs a probe nothing (it is refused
    # at once), and writes come back within this of the node's return.
    db_breaker_reset_seconds: float = 0.25
    # How long a probe may go unanswered before the breaker lets another through, while the
    # first runs on to its attempt deadline. Not that deadline (2.5 s): a probe sent just
    # before HAProxy is reloaded stays with its old process, which retries the old primary
    # until the connect timeout; a probe sent after the reload reaches the new primary at once.
    db_breaker_probe_seconds: float = 0.4
    redis_breaker_reset_seconds: float = 2.0
    health_timeout_s: float = 1.0
    # lean: one multiplexed connection (service.redis_wire); redis-py: its pooled client.
    redis_client: RedisClient = "lean"
    # Redis HA (bonus): with Sentinels, the master is found through them (redis-py's
    # Sentinel support) and REDIS_URL is not used.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "lab"
    # Anti-stampede: single flight (in-process, and across processes through a
    # Redis lock) and XFetch early refresh. Off: the brief's plain cache-aside.
    stampede_protection: bool = True
    # The load lock outlives one database attempt (DB_ATTEMPT_TIMEOUT_S), so a live
    # holder normally finishes first; a dead one delays the others by at most this.
    stampede_lock_ttl_ms: int = 3000
    # How often a request waiting for another process's load looks at the cache.
    stampede_poll_ms: int = 10
    # XFetch's beta: > 1 refreshes earlier, 0 never early (the lock still applies).
    xfetch_beta: float = 1.0

    @property
    def redis_timeout_s(self) -> float:
        return self.redis_timeout_ms / 1000.0

    @property
    def tracks_write_lsn(self) -> bool:
        """The guard needs the cache: without it there is nothing to fill stale."""
        return self.stale_fill_guard and self.cache_enabled

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = _Env(environ)
        breaker_reset = env.number("BREAKER_RESET_SECONDS", None, minimum=0.0)
        return cls(
            db_write_dsn=env.required("DB_WRITE_DSN"),
            db_read_dsn=env.required("DB_READ_DSN"),
            redis_url=env.required("REDIS_URL"),
            cache_enabled=env.boolean("CACHE_ENABLED", True),
            cache_ttl_seconds=env.integer("CACHE_TTL_SECONDS", 60, minimum=1),
            replica_down_policy=env.choice("REPLICA_DOWN_POLICY", "fallback", ("fallback", "error")),
            stale_fill_guard=env.boolean("STALE_FILL_GUARD", True),
            lsn_marker_ttl_seconds=env.integer("LSN_MARKER_TTL_SECONDS", 300, minimum=1),
            redis_timeout_ms=env.integer("REDIS_TIMEOUT_MS", 100, minimum=1),
            db_connect_timeout_s=math.ceil(env.number("DB_CONNECT_TIMEOUT_S", 2.0, minimum=1.0)),
            db_pool_timeout_s=env.number("DB_POOL_TIMEOUT_S", 2.0, minimum=0.01),
            db_direct_connect_timeout_s=env.number("DB_DIRECT_CONNECT_TIMEOUT_S", 0.4, minimum=0.01),
            db_statement_timeout_ms=env.integer("DB_STATEMENT_TIMEOUT_MS", 2000, minimum=1),
            db_attempt_timeout_s=env.number("DB_ATTEMPT_TIMEOUT_S", 2.5, minimum=0.01),
            db_pool_min_size=env.integer("DB_POOL_MIN_SIZE", 1, minimum=0),
            db_pool_max_size=env.integer("DB_POOL_MAX_SIZE", 10, minimum=1),
            breaker_failure_threshold=env.integer("BREAKER_FAILURE_THRESHOLD", 3, minimum=1),
            db_breaker_reset_seconds=env.number(
                "DB_BREAKER_RESET_SECONDS", 0.25 if breaker_reset is None else breaker_reset, minimum=0.0
            ),
            db_breaker_probe_seconds=env.number("DB_BREAKER_PROBE_SECONDS", 0.4, minimum=0.0),
            redis_breaker_reset_seconds=env.number(
                "REDIS_BREAKER_RESET_SECONDS", 2.0 if breaker_reset is None else breaker_reset, minimum=0.0
            ),
            health_timeout_s=env.number("HEALTH_TIMEOUT_S", 1.0, minimum=0.01),
            redis_client=env.choice("REDIS_CLIENT", "lean", ("lean", "redis-py")),
            redis_sentinels=env.addresses("REDIS_SENTINELS"),
            redis_sentinel_master=env.text("REDIS_SENTINEL_MASTER", "lab"),
            stampede_protection=env.boolean("STAMPEDE_PROTECTION", True),
            stampede_lock_ttl_ms=env.integer("STAMPEDE_LOCK_TTL_MS", 3000, minimum=1),
            stampede_poll_ms=env.integer("STAMPEDE_POLL_MS", 10, minimum=1),
            xfetch_beta=env.number("XFETCH_BETA", 1.0, minimum=0.0),
        )._checked()

    def _checked(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise SettingsError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        return self


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def required(self, name: str) -> str:
        value = self._raw(name)
        if value is None:
            raise SettingsError(f"environment variable {name} is required and is not set")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise SettingsError(f"{name} must be one of on/off, true/false, yes/no, 1/0; got {value!r}")

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name} must be an integer; got {value!r}") from None
        if number < minimum:
            raise SettingsError(f"{name} must be >= {minimum}; got {number}")
        return number

    def number(self, name: str, default: float | None, *, minimum: float) -> float:
        value = self._raw(name)
        if value is None:
            return default  # type: ignore[return-value]
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name} must be a number; got {value!r}") from None
        if not math.isfinite(number) or number < minimum:
            raise SettingsError(f"{name} must be a finite number >= {minimum}; got {value!r}")
        return number

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def addresses(self, name: str) -> tuple[tuple[str, int], ...]:
        """``host:port,host:port``; empty when unset."""
        value = self._raw(name)
        if value is None:
            return ()
        parsed = []
        for item in value.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(f"{name} must be a comma-separated list of host:port; got {item.strip()!r}")
            parsed.append((host, int(port)))
        return tuple(parsed)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]):
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        return value.lower()
