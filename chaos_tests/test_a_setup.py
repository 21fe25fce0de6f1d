"""TP part A: the stack is up, and every service answers its own protocol (not just a port)."""

from __future__ import annotations

import pytest

from chaoslab import pg
from chaoslab.topology import HAPROXY, PRIMARY, REDIS, REPLICA

pytestmark = pytest.mark.setup


@pytest.mark.parametrize("service", [PRIMARY, REPLICA])
def test_database_node_answers_sql(lab, service):
    assert lab.is_running(service)
    assert pg.query_one(lab.endpoint(service), lab.creds, "SELECT 1") == 1, f"{service} did not answer SELECT 1"


def test_redis_answers_ping(lab):
    assert lab.is_running(REDIS)
    assert lab.redis().ping() is True


def test_haproxy_answers_its_runtime_api_and_forwards_postgresql(lab):
    assert lab.is_running(HAPROXY)
    assert "Version:" in lab.haproxy_command("show info")
    # The PostgreSQL protocol passes through the proxy: a query answers through it.
    assert pg.query_one(lab.endpoint(HAPROXY), lab.creds, "SELECT 1") == 1


def test_versions_are_reported(lab, measure):
    versions = lab.versions()
    for component, version in versions.items():
        measure(f"{component}_version", version)
    assert set(versions) == {"postgresql", "redis", "haproxy"}
