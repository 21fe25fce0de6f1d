"""The hands-on lab's topology rules that need no server: what `fault`, `promote` and
`switch` refuse, and with which message."""

from __future__ import annotations

import pytest

from chaoslab import hands_on
from chaoslab.errors import LabError
from chaoslab.hands_on import BriefLab, PatroniLab, SentinelLab

pytestmark = pytest.mark.unit


def test_every_topology_of_up_has_a_lab():
    assert set(hands_on.TOPOLOGIES) == {"brief", "sentinel", "patroni"}
    assert hands_on.DEFAULT_TOPOLOGY == "brief"


def test_a_fault_on_a_service_the_topology_lacks_names_what_it_has():
    with pytest.raises(LabError) as raised:
        BriefLab(cluster=None).fault("kill", "pg-1")
    message = str(raised.value)
    assert "this lab has no 'pg-1'" in message and "brief topology (db-primary, db-replica, redis, haproxy)" in message


def test_an_unknown_fault_is_refused_before_anything_is_touched():
    with pytest.raises(ValueError, match="unknown fault 'melt'"):
        BriefLab(cluster=None).fault("melt", "redis")


@pytest.mark.parametrize("command", ["promote", "switch"])
def test_patroni_takes_no_method_and_only_its_own_nodes(command):
    lab = PatroniLab(cluster=None)
    with pytest.raises(ValueError, match="no --method"):
        getattr(lab, command)("pg-2", "pg_ctl" if command == "promote" else "reload")
    with pytest.raises(LabError, match=r"database node of the patroni topology \(pg-1, pg-2\)"):
        getattr(lab, command)("db-replica", None)


def test_the_sentinel_topology_is_the_brief_plus_the_group():
    class Group:
        nodes = {"redis-ha-1": None, "redis-ha-2": None}
        sentinels = {"sentinel-1": None, "sentinel-2": None, "sentinel-3": None}
    lab = SentinelLab(cluster=None, group=Group())
    assert lab.services()[:4] == BriefLab(cluster=None).services()
    assert set(lab.services()[4:]) == {"redis-ha-1", "redis-ha-2", "sentinel-1", "sentinel-2", "sentinel-3"}


def test_watch_and_demo_refuse_a_topology_without_the_brief_s_nodes():
    cluster = object()
    assert BriefLab(cluster).brief_cluster("watch") is cluster
    with pytest.raises(LabError, match=r"for `watch` but this one runs the patroni topology"):
        PatroniLab(cluster).brief_cluster("watch")
