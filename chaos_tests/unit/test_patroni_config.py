"""The Patroni topology's pure parts: the timing rule, each node's config, HAProxy's rendering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chaoslab.patroni.config import (DCS_API, LAB_TIMINGS, NODE_NAME_SETTING, NodeAddresses, Timings, haproxy_source,
                                     node_config, render_haproxy, route_checks)
from chaoslab.topology import Credentials, Endpoint

CREDS = Credentials(superuser="postgres", superuser_password="su-pw", app_user="app", app_password="app-pw",
                    database="appdb", replication_user="repl", replication_password="repl-pw")
NODES = {
    "pg-1": NodeAddresses(postgres=Endpoint("127.0.0.1", 15432), rest=Endpoint("127.0.0.1", 18008)),
    "pg-2": NodeAddresses(postgres=Endpoint("127.0.0.1", 25432), rest=Endpoint("127.0.0.1", 28008)),
}


def test_lab_timings_keep_patronis_rule():
    t = LAB_TIMINGS
    assert t.loop_wait + 2 * t.retry_timeout <= t.ttl
    assert (t.ttl, t.loop_wait, t.retry_timeout) == (7, 1, 3)
    assert t.leader_loss_bound == 8


@pytest.mark.parametrize("ttl, loop_wait, retry_timeout", [(10, 3, 4), (8, 2, 4), (30, 10, 11)])
def test_timings_that_break_the_rule_are_refused(ttl, loop_wait, retry_timeout):
    with pytest.raises(ValueError, match="loop_wait"):
        Timings(ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout)


def _config(**kwargs) -> dict:
    return node_config("pg-2", addresses=NODES["pg-2"], etcd=Endpoint("127.0.0.1", 2379), data_dir=Path("/d"),
                       bin_dir=Path("/b"), socket_dir=Path("/s"), creds=CREDS, **kwargs)


def test_node_config_carries_the_timings_rewind_and_the_node_name():
    config = _config(synchronous_mode=True)
    dcs = config["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (7, 1, 3)
    assert dcs["primary_start_timeout"] == 0
    assert dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"]["wal_log_hints"] == "on"
    assert config["name"] == "pg-2"
    assert config["postgresql"]["parameters"][NODE_NAME_SETTING] == "pg-2"
    assert config["postgresql"]["listen"] == "127.0.0.1:25432"
    assert config["restapi"]["listen"] == "127.0.0.1:28008"
    assert config[DCS_API]["hosts"] == ["127.0.0.1:2379"]
    assert config["postgresql"]["bin_dir"] == "/b"


def test_node_config_uses_scram_and_no_trust_over_tcp():
    config = _config()
    hba = config["postgresql"]["pg_hba"]
    assert all("trust" not in line for line in hba if line.startswith("host"))
    assert any(line.startswith("host replication repl ") and line.endswith("scram-sha-256") for line in hba)
    assert {"auth-host": "scram-sha-256"} in config["bootstrap"]["initdb"]
    assert config["postgresql"]["authentication"]["replication"] == {"username": "repl", "password": "repl-pw"}


def test_haproxy_file_checks_patronis_rest_api():
    text = haproxy_source()
    primary = text[text.index("\nbackend pg_primary"):text.index("\nbackend pg_standby")]
    standby = text[text.index("\nbackend pg_standby"):text.index("\nbackend pg_readable")]
    readable = text[text.index("\nbackend pg_readable"):text.index("\nbackend pg_running")]
    running = text[text.index("\nbackend pg_running"):]
    assert "option httpchk OPTIONS /primary" in primary and "http-check expect status 200" in primary
    assert "option httpchk OPTIONS /replica" in standby and "http-check expect status 200" in standby
    assert re.search(r"http-check send meth OPTIONS uri /read-only\n\s+http-check expect status 200\n"
                     r"\s+http-check connect\n\s+http-check send meth OPTIONS uri /health\n"
                     r"\s+http-check expect status 200", readable), (
        "with no standby up, reads go to a node Patroni calls readable whose PostgreSQL runs: "
        "the leader key alone says /read-only 200 while its PostgreSQL stops for a switchover")
    assert "use_backend pg_standby if { nbsrv(pg_standby) gt 0 }" in text
    assert "use_backend pg_readable if { nbsrv(pg_readable) gt 0 }" in text
    assert "default_backend pg_running" in text and "option httpchk OPTIONS /health" in running, (
        "with no node Patroni calls readable, any node whose PostgreSQL runs serves reads")
    assert "on-marked-down shutdown-sessions" in primary
    assert re.search(r"fall 1 rise 2", primary), "writes: down on one failed check, up on two good ones"


def test_render_gives_each_server_its_own_address_and_rest_port(tmp_path):
    rendered = render_haproxy(haproxy_source(), NODES, write_bind=Endpoint("127.0.0.1", 6000),
                              read_bind=Endpoint("127.0.0.1", 6001), socket_path=tmp_path / "admin.sock")
    servers = [line.strip() for line in rendered.splitlines() if line.strip().startswith("server ")]
    assert servers.count("server pg-1 127.0.0.1:15432 check port 18008") == 4   # one per backend
    assert servers.count("server pg-2 127.0.0.1:25432 check port 28008") == 4
    assert "bind 127.0.0.1:6000" in rendered and "bind 127.0.0.1:6001" in rendered
    assert f"stats socket {tmp_path / 'admin.sock'}" in rendered


def test_render_refuses_a_node_it_has_no_address_for(tmp_path):
    with pytest.raises(ValueError, match="container addresses"):
        render_haproxy(haproxy_source(), {"pg-1": NODES["pg-1"]}, write_bind=Endpoint("127.0.0.1", 6000),
                       read_bind=Endpoint("127.0.0.1", 6001), socket_path=tmp_path / "admin.sock")


def test_checks_routed_through_the_links_leave_the_sessions_direct(tmp_path):
    """HAProxy's checks of each node's REST API go to its link's proxy (`check addr A port P`),
    its sessions still to the node's PostgreSQL; nothing of the container addresses is left."""
    checks = route_checks(haproxy_source(), {"pg-1": Endpoint("127.0.0.1", 19001), "pg-2": Endpoint("127.0.0.1", 19002)})
    rendered = render_haproxy(checks, NODES, write_bind=Endpoint("127.0.0.1", 6000),
                              read_bind=Endpoint("127.0.0.1", 6001), socket_path=tmp_path / "admin.sock")
    servers = [line.strip() for line in rendered.splitlines() if line.strip().startswith("server ")]
    assert servers.count("server pg-1 127.0.0.1:15432 check addr 127.0.0.1 port 19001") == 4
    assert servers.count("server pg-2 127.0.0.1:25432 check addr 127.0.0.1 port 19002") == 4


def test_an_etcd_behind_a_proxy_is_not_gone_round():
    """Through its link's proxy, Patroni must not ask etcd for its members' own addresses."""
    config = node_config("pg-1", addresses=NODES["pg-1"], etcd=Endpoint("127.0.0.1", 12379), data_dir=Path("/d"),
                         bin_dir=None, socket_dir=Path("/s"), creds=CREDS, etcd_is_a_proxy=True)
    assert config[DCS_API] == {"hosts": ["127.0.0.1:12379"], "protocol": "http", "use_proxies": True}
