"""PostgreSQL access by role: one pool and one circuit breaker for the primary (the
write DSN, through HAProxy) and one of each for the replica (the read DSN).

Every attempt runs in its own task with a client-side deadline. When the deadline
passes the task is cancelled and left to finish in the background: psycopg answers a
cancellation by sending a cancel request and waiting for the query to end (up to
seconds when the server is SIGSTOPped), and the request must not wait for that.

A refused connection is an answer, not silence: when the server (or HAProxy, with no
server to offer) refuses or closes a new connection at once, a request does not wait
the pool timeout for the pool's next attempt. It fails at once (and counts toward the
breaker), or, when the last attempt was refused and the pool has no idle connection,
asks the server again itself, so that it gets today's answer, not a remembered one.
The pool's timeouts are kept for silence: a frozen server, or a proxy still retrying.

Once the server has gone away (a connection broke, an attempt failed) a request that
finds no idle connection does not wait for the pool's next attempt either, which may
sit out libpq's whole connect timeout (2 s at least) in a proxy retrying a dead server:
it asks the server itself, and gives that connection DB_DIRECT_CONNECT_TIMEOUT_S, what
a local server takes with a wide margin, before it answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import AsyncConnection, errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from service.breaker import BreakerState, CircuitBreaker
from service.errors import UnprocessableEntity
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)

Role = Literal["primary", "replica"]
T = TypeVar("T")
SERVICE_NAMES: dict[str, str] = {"primary": "db-primary", "replica": "db-replica"}

# The pool gives up reconnecting after this long, and the next request that finds
# the pool empty starts a fresh attempt at once; left at its default (minutes), the
# pool's exponential backoff could delay reconnection long after the server is back.
_RECONNECT_TIMEOUT_S = 3.0
_CLOSE_TIMEOUT_S = 1.0


class DatabaseUnavailable(Exception):
    """The role cannot serve now. ``maybe_applied``: a write may have been executed."""

    def __init__(self, role: Role, reason: str, *, retry_after: int = 1, maybe_applied: bool = False) -> None:
        super().__init__(f"{role}: {reason}")
        self.role = role
        self.reason = reason
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied

    @property
    def service(self) -> str:
        return SERVICE_NAMES[self.role]


class DatabaseRejected(UnprocessableEntity):
    """The database refused the values (data or integrity error): the client's fault."""

    def __init__(self) -> None:
        super().__init__("the database rejected these values")


class _AttemptTimedOut(Exception):
    pass


class _BrokenConnection(Exception):
    pass


class _Refused(Exception):
    """The server refused a new connection at once: nothing was sent."""


class ConnectWatch:
    """What the latest connection attempt to a role said: refused at once, or not; and
    whether the server has been lost since a connection to it last succeeded.

    A failure that came before the connect timeout is the server's (or the proxy's)
    answer; one that took the whole timeout is silence, and says nothing about now.
    """

    def __init__(self, connect_timeout_s: float) -> None:
        self._silence_s = connect_timeout_s * 0.9
        self.refusing = False
        self.lost = False
        self._waiters: set[asyncio.Future] = set()

    def record_lost(self) -> None:
        """A connection broke under a query or failed its check, or an attempt got no answer."""
        self.lost = True

    def record(self, elapsed_s: float, *, connected: bool) -> None:
        self.lost = not connected
        self.refusing = not connected and elapsed_s < self._silence_s
        if self.refusing:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def next_refusal(self) -> asyncio.Future:
        """Done when the next attempt to connect is refused (not one before this call)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        return waiter


def watched_connection_class(watch: ConnectWatch) -> type[AsyncConnection]:
    """A connection class that tells ``watch`` how each attempt to connect ended: the
    pool's own attempts (it connects through ``connection_class``) and the direct ones."""

    class WatchedConnection(AsyncConnection):
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any):  # type: ignore[override]
            started = time.monotonic()
            try:
                conn = await super().connect(*args, **kwargs)
            except psycopg.OperationalError:
                watch.record(time.monotonic() - started, connected=False)
                raise
            watch.record(time.monotonic() - started, connected=True)
            return conn

    return WatchedConnection


class Session:
    """A pooled connection that counts its round trips."""

    def __init__(self, conn: AsyncConnection, on_round_trip: Callable[[], None]) -> None:
        self.conn = conn
        self._on_round_trip = on_round_trip

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        self._on_round_trip()
        cursor = await self.conn.execute(sql, params)
        return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._on_round_trip()
        cursor = await self.conn.execute(sql, params)
        return await cursor.fetchall()

    async def fetchone_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[tuple | None]:
        """Run several statements in one network round trip (pipeline mode), in order,
        each with its own snapshot (READ COMMITTED), and return each first row."""
        self._on_round_trip()
        cursors = []
        async with self.conn.pipeline() as pipeline:
            for sql, params in statements:
                cursor = self.conn.cursor()
                await cursor.execute(sql, params)
                cursors.append(cursor)
            await pipeline.sync()
            return [await cursor.fetchone() for cursor in cursors]


class DatabaseRole:
    def __init__(self, role: Role, dsn: str, settings: Settings, metrics: Metrics, breaker: CircuitBreaker) -> None:
        self.role = role
        self.breaker = breaker
        self._dsn = dsn
        self._settings = settings
        self._metrics = metrics
        self._pool: AsyncConnectionPool | None = None
        self._abandoned: set[asyncio.Task] = set()
        self._watch = ConnectWatch(settings.db_connect_timeout_s)
        self._connection_class = watched_connection_class(self._watch)
        self._connect_kwargs: dict[str, Any] = {}
        self._renewing = False

    @property
    def service(self) -> str:
        return SERVICE_NAMES[self.role]

    async def open(self) -> None:
        s = self._settings
        self._connect_kwargs = {
            # One statement is one round trip: no BEGIN, no ROLLBACK on return.
            "autocommit": True,
            "connect_timeout": s.db_connect_timeout_s,
            "options": f"-c statement_timeout={s.db_statement_timeout_ms}",
            "application_name": f"chaoslab-api-{self.role}",
        }
        self._pool = await self._open_pool()

    async def _open_pool(self) -> AsyncConnectionPool:
        s = self._settings
        pool = AsyncConnectionPool(
            self._dsn,
            connection_class=self._connection_class,
            kwargs=self._connect_kwargs,
            min_size=s.db_pool_min_size,
            max_size=s.db_pool_max_size,
            timeout=s.db_pool_timeout_s,
            reconnect_timeout=_RECONNECT_TIMEOUT_S,
            # No check= here: the pool would sleep its reconnection backoff (a second) after
            # each dead connection it finds. _on_connection checks them itself.
            name=self.role,
            open=False,
        )
        # Do not wait: the API must start (and say 503) while a database is down.
        await pool.open(wait=False)
        return pool

    async def _renew_pool(self, failed: AsyncConnectionPool) -> None:
        """The server answers again, but the pool that saw it fail is waiting out its
        reconnection backoff (seconds), or still stuck in an attempt made while the
        server was silent: a fresh pool connects at once. The old one closes aside;
        connections still out return to it and are closed there."""
        if self._pool is not failed or self._renewing:
            return
        self._renewing = True
        try:
            self._pool = await self._open_pool()
        finally:
            self._renewing = False
        logger.info("%s answers again: connection pool renewed", self.role)
        self._keep(asyncio.ensure_future(failed.close(timeout=_CLOSE_TIMEOUT_S)))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=_CLOSE_TIMEOUT_S)

    async def run(self, operation: Callable[[Session], Awaitable[T]], *, retry_if_broken: bool) -> T:
        """Run ``operation`` on a pooled connection through the breaker.

        ``retry_if_broken``: only for operations safe to repeat (reads): a connection
        that died under us is retried once, on a new connection rather than a pooled
        one: the node behind it went away (a stop, a switchover), and the pool's other
        connections to it are as dead, though they may still pass the pool's check for
        the few milliseconds the node takes to close them.
        """
        if not self.breaker.allow_request():
            raise DatabaseUnavailable(self.role, "circuit breaker open", retry_after=self.breaker.retry_after())
        attempts = 2 if retry_if_broken else 1
        for attempt in range(1, attempts + 1):
            try:
                result = await self._attempt(operation, self._settings.db_attempt_timeout_s, counted=True,
                                             fresh=attempt > 1)
            except _BrokenConnection as exc:
                self._watch.record_lost()   # the server went away under it
                if attempt < attempts:
                    logger.info("%s: connection broke under a read, retrying on a new one", self.role)
                    continue
                raise self._failed("connection lost", exc, maybe_applied=True) from None
            except _AttemptTimedOut as exc:
                raise self._failed("timed out", exc, maybe_applied=True) from None
            except _Refused as exc:
                raise self._failed("not accepting connections", exc, maybe_applied=False) from None
            except PoolTimeout as exc:
                raise self._failed("no connection available", exc, maybe_applied=False) from None
            except pg_errors.ReadOnlySqlTransaction as exc:
                # The write DSN reached a standby: mid-failover, HAProxy not switched yet.
                raise self._failed("node is read-only", exc, maybe_applied=False) from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise self._failed("database error", exc, maybe_applied=True) from None
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                self.breaker.record_success()
                logger.info("%s rejected values: %s", self.role, exc.sqlstate)
                raise DatabaseRejected() from None
            except psycopg.Error as exc:
                # The server answered, so it is up (say, a missing table): no breaker failure.
                self.breaker.record_success()
                logger.error("%s: unexpected database error %s", self.role, exc.sqlstate, exc_info=exc)
                raise DatabaseUnavailable(self.role, "unexpected database error", maybe_applied=True) from None
            self.breaker.record_success()
            return result
        raise AssertionError("unreachable")

    async def probe(self, operation: Callable[[Session], Awaitable[T]], timeout: float) -> T:
        """For /health: no breaker, not counted as a product query; raises on failure."""
        try:
            return await self._attempt(operation, timeout, counted=False)
        except _AttemptTimedOut:
            raise TimeoutError(f"no answer within {timeout} s") from None

    def _failed(self, reason: str, exc: BaseException, *, maybe_applied: bool) -> DatabaseUnavailable:
        self.breaker.record_failure()
        self._metrics.dependency_failures.labels(self.role).inc()
        # The driver's class name only: its message can carry hosts and SQL.
        cause = exc.__cause__ if isinstance(exc, (_BrokenConnection, _Refused)) else exc
        detail = "" if isinstance(cause, _AttemptTimedOut) else f" ({type(cause).__name__})"
        logger.warning("%s unavailable: %s%s", self.role, reason, detail)
        return DatabaseUnavailable(
            self.role, reason, retry_after=self.breaker.retry_after(), maybe_applied=maybe_applied
        )

    async def _attempt(self, operation: Callable[[Session], Awaitable[T]], timeout: float, *, counted: bool,
                       fresh: bool = False) -> T:
        task = asyncio.ensure_future(self._on_connection(operation, counted, fresh))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            raise _AttemptTimedOut()
        return task.result()

    async def _on_connection(self, operation: Callable[[Session], Awaitable[T]], counted: bool,
                             fresh: bool = False) -> T:
        pool = self._pool
        if pool is None:
            raise PoolTimeout("pool not open")
        on_round_trip = self._metrics.db_queries.labels(self.role).inc if counted else _no_op
        if fresh or self._watch.refusing or (
                (self._watch.lost or self.breaker.state is not BreakerState.CLOSED)
                and not pool.get_stats().get("pool_available")):
            # A retry after a connection broke, or the server refused the last attempt (what
            # the pool holds predates it: likely dead), or nothing is idle and the server was
            # lost (or this is the breaker's probe): ask the server now, rather than wait for
            # the pool's next attempt, which its backoff or a silent proxy may hold for seconds.
            return await self._on_direct_connection(pool, operation, on_round_trip)
        conn = await self._getconn_unless_refused(pool)
        try:
            # After a restart or a failover every pooled connection is dead: test the one
            # leaving the pool (one empty round trip), so that a write is never sent on it.
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            self._watch.record_lost()
            await pool.putconn(conn)   # broken: the pool drops it
            # The server went away since this pool connected: the connections it still
            # holds are as dead. Ask the server directly; if it answers, the pool is renewed.
            return await self._on_direct_connection(pool, operation, on_round_trip)
        try:
            return await _run_on(conn, operation, on_round_trip)
        finally:
            await pool.putconn(conn)

    async def _getconn_unless_refused(self, pool: AsyncConnectionPool) -> AsyncConnection:
        """A pooled connection, or ``_Refused`` as soon as an attempt to connect is refused
        while waiting for one (the pool would go on waiting until its timeout)."""
        refused = self._watch.next_refusal()
        getconn = asyncio.ensure_future(pool.getconn())
        try:
            await asyncio.wait({getconn, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
            if not getconn.done():
                getconn.cancel()
                # A connection handed over just as the wait was cancelled goes back.
                getconn.add_done_callback(lambda done: self._put_back(pool, done))
        if getconn.done():
            return getconn.result()   # PoolTimeout if the pool gave up first
        raise _Refused("the server refused a new connection while the pool waited for one")

    def _put_back(self, pool: AsyncConnectionPool, getconn: asyncio.Future) -> None:
        if not getconn.cancelled() and getconn.exception() is None:
            self._keep(asyncio.ensure_future(pool.putconn(getconn.result())))

    async def _on_direct_connection(self, pool: AsyncConnectionPool, operation: Callable[[Session], Awaitable[T]],
                                    on_round_trip: Callable[[], None]) -> T:
        deadline_s = self._settings.db_direct_connect_timeout_s
        try:
            async with asyncio.timeout(deadline_s):
                conn = await self._connection_class.connect(self._dsn, **self._connect_kwargs)
        except TimeoutError as exc:
            self._watch.record_lost()
            raise PoolTimeout(f"no answer to a new connection within {deadline_s} s") from exc
        except psycopg.OperationalError as exc:
            if self._watch.refusing:
                raise _Refused() from exc
            raise PoolTimeout("no answer to a new connection") from exc
        await self._renew_pool(pool)
        try:
            return await _run_on(conn, operation, on_round_trip)
        finally:
            await conn.close()

    def _abandon(self, task: asyncio.Task) -> None:
        task.cancel()
        self._keep(task)

    def _keep(self, task: asyncio.Task) -> None:
        """Hold a background task until it ends (the loop keeps only weak references)."""
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("abandoned %s attempt ended with %r", self.role, task.exception())


# The server ends the session itself: a shutdown (a stop, a switchover's demotion), a crash
# of another backend, or a node still starting. The error can arrive before the driver has
# seen the socket close (in a pipeline, the connection is then only "aborted"), so the
# SQLSTATE says it, not ``conn.broken``.
_SESSION_ENDED_BY_SERVER = (pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)


async def _run_on(conn: AsyncConnection, operation: Callable[[Session], Awaitable[T]],
                  on_round_trip: Callable[[], None]) -> T:
    """Run ``operation``; a connection that died under it raises ``_BrokenConnection``."""
    try:
        return await operation(Session(conn, on_round_trip))
    except psycopg.Error as exc:
        if conn.broken or isinstance(exc, _SESSION_ENDED_BY_SERVER) or _failed_without_the_server(exc):
            raise _BrokenConnection() from exc
        raise


def _failed_without_the_server(exc: psycopg.Error) -> bool:
    """An OperationalError with no SQLSTATE came from the driver, not from the server: the
    connection failed under the query (a pipeline aborted by a session that ended, as in a
    switchover), whatever ``conn.broken`` says yet. An error the server sent has a SQLSTATE."""
    return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None


def _no_op() -> None:
    pass
