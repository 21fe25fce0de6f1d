"""pg.KeptSession, the kept connection behind Patroni's role samplers, against a real
PostgreSQL: one connection across queries, a new one once the server restarted, and a
bounded wait, never a hang, when the server freezes."""

from __future__ import annotations

import time

import psycopg
import pytest

from chaoslab import pg
from chaoslab.topology import REPLICA

pytestmark = pytest.mark.harness
PID = "SELECT pg_backend_pid()"


@pytest.fixture
def session(lab):
    kept = pg.KeptSession(lab.endpoint(REPLICA), lab.creds, role="superuser", dbname="postgres", timeout=1.0)
    yield kept
    kept.close()


def test_one_connection_serves_every_query_and_a_restart_costs_no_failure(lab, session):
    backend = session.query_one(PID)
    assert session.query_one(PID) == backend, "a second query opened a new connection"
    assert session.query_one("SELECT pg_is_in_recovery()") == "t"
    with pytest.raises(psycopg.DatabaseError, match="division by zero"):
        session.query_one("SELECT 1 / 0")
    assert session.query_one(PID) == backend, "an SQL error dropped a connection that still works"

    lab.fault("restart", REPLICA)
    after = session.query_one(PID)   # the kept connection is broken: opened again, asked again
    assert after is not None and after != backend


def test_a_frozen_server_is_given_up_on_at_the_deadline(lab, session):
    session.query_one(PID)
    lab.fault("pause", REPLICA)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            session.query_one(PID)
        waited = time.monotonic() - started
        # Then a new connection, bounded by connect_timeout (2 s), not by the freeze's length.
        with pytest.raises(psycopg.OperationalError):
            session.query_one(PID)
        waited_again = time.monotonic() - started - waited
    finally:
        lab.fault("resume", REPLICA)
    assert waited < 3, f"a query to a frozen {REPLICA} waited {waited:.1f} s, past its 1 s deadline"
    assert waited_again < 4, f"a connection to a frozen {REPLICA} waited {waited_again:.1f} s"
    assert session.query_one("SELECT pg_is_in_recovery()") == "t", f"no answer from {REPLICA} once thawed"
