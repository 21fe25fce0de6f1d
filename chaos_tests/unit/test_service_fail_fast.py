"""A refused connection is an answer: the API's database layer fails at once on it.

No server is needed to be refused: a port of 127.0.0.1 where nothing listens makes the
kernel refuse the connection, as a stopped PostgreSQL does (or HAProxy with no server).
"""

from __future__ import annotations

import asyncio
import socket
import time

import psycopg
import pytest
from psycopg import errors as psycopg_errors

from service.breaker import BreakerState, CircuitBreaker
from service.db import ConnectWatch, DatabaseRole, DatabaseUnavailable, _BrokenConnection, _run_on
from service.metrics import Metrics
from service.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]   # closed again when the block ends: nothing listens there


def _settings(dsn: str) -> Settings:
    # A pool timeout far above what a refusal takes, so that waiting it out would show.
    return Settings(db_write_dsn=dsn, db_read_dsn=dsn, redis_url="redis://127.0.0.1:1/0",
                    db_pool_timeout_s=5.0, db_attempt_timeout_s=6.0)


async def _select_one(session) -> tuple | None:
    return await session.fetchone("SELECT 1")


def test_a_refused_connection_fails_at_once_and_opens_the_breaker():
    dsn = f"host=127.0.0.1 port={_closed_port()} dbname=x user=x password=x"
    settings = _settings(dsn)
    breaker = CircuitBreaker("replica", failure_threshold=3, reset_timeout=60)

    async def scenario() -> list[tuple[str, float]]:
        role = DatabaseRole("replica", dsn, settings, Metrics(), breaker)
        await role.open()
        outcomes = []
        try:
            for _ in range(4):
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable) as failure:
                    await role.run(_select_one, retry_if_broken=True)
                outcomes.append((failure.value.reason, time.monotonic() - started))
        finally:
            await role.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    reasons = [reason for reason, _ in outcomes]
    # Not "no connection available": that is the pool timeout (5 s here) running out.
    assert reasons == ["not accepting connections"] * 3 + ["circuit breaker open"], outcomes
    assert breaker.state is BreakerState.OPEN
    assert max(seconds for _, seconds in outcomes) < settings.db_pool_timeout_s, outcomes


def test_only_a_quick_failure_counts_as_a_refusal():
    async def scenario() -> tuple[bool, bool, bool, bool]:
        watch = ConnectWatch(connect_timeout_s=2)
        waiter = watch.next_refusal()
        watch.record(1.95, connected=False)   # the whole timeout: silence, not an answer
        silent = (watch.refusing, waiter.done())
        watch.record(0.01, connected=False)   # refused at once
        refused = (watch.refusing, waiter.done())
        watch.record(0.02, connected=True)
        return (*silent, *refused) + (watch.refusing,)

    silent_refusing, silent_done, refusing, done, after_success = asyncio.run(scenario())
    assert (silent_refusing, silent_done) == (False, False)
    assert (refusing, done) == (True, True)
    assert after_success is False


def test_the_server_is_lost_from_a_failure_until_a_connection_succeeds():
    watch = ConnectWatch(connect_timeout_s=2)
    seen = [watch.lost]
    watch.record_lost()                       # a connection broke under a query
    seen.append(watch.lost)
    watch.record(0.02, connected=True)
    seen.append(watch.lost)
    watch.record(1.95, connected=False)       # silence is a failure too, though not a refusal
    seen.append(watch.lost)
    assert seen == [False, True, False, True]


def test_once_the_server_is_lost_a_silent_one_costs_the_direct_deadline_not_the_pool_timeout():
    """F1 behind the brief's HAProxy: it accepts the API's connection and retries the dead
    primary for seconds, saying nothing. A listening socket that never accepts is as silent:
    the kernel completes the handshake, the startup message goes unanswered."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        dsn = f"host=127.0.0.1 port={silent.getsockname()[1]} dbname=x user=x password=x"
        settings = _settings(dsn)
        breaker = CircuitBreaker("primary", failure_threshold=3, reset_timeout=60)

        async def scenario() -> tuple[str, float]:
            role = DatabaseRole("primary", dsn, settings, Metrics(), breaker)
            await role.open()
            try:
                role._watch.record_lost()   # as when the pooled connections broke at the fault
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable) as failure:
                    await role.run(_select_one, retry_if_broken=False)
                return failure.value.reason, time.monotonic() - started
            finally:
                await role.close()

        reason, seconds = asyncio.run(scenario())
    assert reason == "no connection available"
    # The pool timeout is 5 s here and libpq's connect timeout 2 s: either would show.
    assert seconds < 1.0, seconds


class _Connection:
    """What _run_on reads of a connection: whether the driver has seen it die yet."""

    def __init__(self, broken: bool) -> None:
        self.broken = broken


@pytest.mark.parametrize("ended", [psycopg_errors.AdminShutdown, psycopg_errors.CrashShutdown,
                                   psycopg_errors.CannotConnectNow])
def test_a_session_the_server_ended_is_a_broken_connection_even_before_the_socket_closes(ended):
    """A switchover's demotion terminates the sessions (57P01) of a node a pooled connection still
    reaches; in a pipeline the driver reports it before it marks the connection broken. It must
    be retried (a read) like a dead connection, not failed as a database error."""
    async def operation(session):
        raise ended("terminating connection due to administrator command")
    with pytest.raises(_BrokenConnection):
        asyncio.run(_run_on(_Connection(broken=False), operation, lambda: None))


@pytest.mark.parametrize("failure", [psycopg.errors.PipelineAborted("pipeline aborted"),
                                     psycopg.OperationalError("consuming input failed: server closed the connection")])
def test_a_failure_the_driver_reports_without_a_sqlstate_is_a_broken_connection(failure):
    """Seen in CI during a Patroni switchover: a read's pipeline aborted under it ("pipeline=ABORTED",
    the connection not yet marked broken), then failed as a database error with no retry, and the
    read answered 503 while the other node could serve it."""
    async def operation(session):
        raise failure
    with pytest.raises(_BrokenConnection):
        asyncio.run(_run_on(_Connection(broken=False), operation, lambda: None))


def test_an_error_of_the_query_itself_on_a_live_connection_is_not_a_broken_connection():
    async def operation(session):
        raise psycopg_errors.UndefinedTable("relation does not exist")
    with pytest.raises(psycopg_errors.UndefinedTable):
        asyncio.run(_run_on(_Connection(broken=False), operation, lambda: None))
