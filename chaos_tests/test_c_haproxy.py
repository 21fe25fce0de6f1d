"""TP part C: HAProxy as the single database entry point, and what its checks can see."""

from __future__ import annotations

import time

import psycopg
import pytest

from chaoslab import pg
from chaoslab.haproxy_config import WRITE_BACKEND
from chaoslab.topology import HAPROXY, PRIMARY, REPLICA
from chaoslab.waits import wait_until

pytestmark = pytest.mark.haproxy


def test_connection_through_haproxy_lands_on_primary(lab):
    assert lab.node_behind_haproxy() == PRIMARY
    assert pg.in_recovery(lab.endpoint(HAPROXY), lab.creds) is False


def test_role_aware_config_reads_reach_the_standby(lab):
    lab.use_haproxy_config("role_aware")
    assert lab.node_behind_haproxy() == PRIMARY
    assert lab.node_behind_haproxy(read=True) == REPLICA


def test_role_aware_config_follows_a_promotion(lab, measure):
    """Stop the primary: HAProxy marks it down; promote: writes reach the new primary, no edit."""
    lab.use_haproxy_config("role_aware")
    lab.stop(PRIMARY)
    stopped = time.monotonic()
    wait_until(lambda: PRIMARY not in lab.haproxy_servers_up(WRITE_BACKEND), service=HAPROXY,
               expected=f"{PRIMARY} marked DOWN in {WRITE_BACKEND}", timeout=10, interval=0.02,
               log=lab.log_path(HAPROXY))
    measure("haproxy_mark_down_ms", round((time.monotonic() - stopped) * 1000, 1), "ms")

    lab.promote(REPLICA)
    promoted = time.monotonic()
    lab.wait_haproxy_routes_writes_to(REPLICA, timeout=10)
    measure("haproxy_reroute_ms", round((time.monotonic() - promoted) * 1000, 1), "ms")
    with pg.connect(lab.endpoint(HAPROXY), lab.creds) as conn:
        conn.execute("INSERT INTO products(name, price_cents) VALUES ('after failover', 1)")


def test_brief_config_routes_by_port_alone(lab):
    """The brief's tcp-check sees an open port, not a role: it keeps sending writes to a standby."""
    lab.stop(PRIMARY)
    lab.promote(REPLICA)
    lab.rejoin(PRIMARY, REPLICA)  # db-primary is up again, but as a read-only standby
    assert pg.in_recovery(lab.endpoint(PRIMARY), lab.creds) is True
    lab.wait_haproxy_settled()  # the brief's check calls it UP: its port is open
    assert lab.node_behind_haproxy() == PRIMARY
    with pg.connect(lab.endpoint(HAPROXY), lab.creds) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO products(name, price_cents) VALUES ('lost', 1)")

    # The role-aware config, in the very same situation, finds the real primary.
    lab.use_haproxy_config("role_aware")
    assert lab.node_behind_haproxy() == REPLICA
