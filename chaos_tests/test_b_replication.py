"""TP part B: the primary and its streaming replica."""

from __future__ import annotations

import time

import psycopg
import pytest

from chaoslab import pg
from chaoslab.topology import PRIMARY, REPLICA
from chaoslab.waits import wait_until

pytestmark = pytest.mark.replication


@pytest.mark.parametrize(("service", "expected"), [(PRIMARY, False), (REPLICA, True)])
def test_roles_b1(lab, service, expected):
    """B1: pg_is_in_recovery() is false on the primary, true on the replica."""
    assert pg.in_recovery(lab.endpoint(service), lab.creds) is expected


def test_row_written_on_primary_appears_on_replica_b2(lab, measure):
    """B2: the brief's table and row, created on the primary, appear on the replica."""
    with pg.connect(lab.endpoint(PRIMARY), lab.creds) as conn:
        conn.execute("DROP TABLE products")
        conn.execute(pg.PRODUCTS_DDL)
        conn.execute("INSERT INTO products(name, price_cents) VALUES ('Keyboard', 4999)")
        written = time.monotonic()

    def row_on_replica():
        return pg.query_one(lab.endpoint(REPLICA), lab.creds,
                            "SELECT name, price_cents FROM products WHERE name = 'Keyboard'")

    # Polling the replica as fast as it answers gives the visible replication delay.
    row = wait_until(row_on_replica, service=REPLICA, expected="the Keyboard row to appear",
                     timeout=10, interval=0.001, log=lab.log_path(REPLICA))
    delay_ms = (time.monotonic() - written) * 1000
    measure("replication_delay_ms", round(delay_ms, 2), "ms")
    assert tuple(row) == ("Keyboard", 4999)


def test_write_on_replica_is_refused(lab):
    with pg.connect(lab.endpoint(REPLICA), lab.creds) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO products(name, price_cents) VALUES ('Mouse', 1999)")
