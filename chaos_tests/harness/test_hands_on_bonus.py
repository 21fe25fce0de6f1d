"""The bonus topologies by hand (`up --topology patroni|sentinel`), as a student uses them: the
printed lines pasted into a shell, promote and switch, faults, `load` in a second terminal.
Apart from test_hands_on.py so that the two long files can run on two workers."""

from __future__ import annotations

import json

import pytest

from chaoslab.waits import wait_until

from .hands_on import (assert_soon_a_hit, chaoslab, connect_lines, ctrl_c_once_clean_again, in_a_second_terminal,
                       pasted, printed, status_line)

pytestmark = pytest.mark.harness


def test_up_patroni_prints_lines_that_work_and_promote_hands_the_lead_over(lab_on):
    output = lab_on("patroni")
    assert "Patroni leader: pg-1" in output, output
    listed = pasted(connect_lines(output, "patroni")[0])
    assert "pg-1" in listed and "pg-2" in listed and "Leader" in listed, f"`patronictl list` printed:\n{listed}"
    post, get, put, health = printed(output, "curl ")
    assert json.loads(pasted(post))["id"] == 1
    assert "x-cache: miss" in pasted(get).lower()
    assert_soon_a_hit(get)

    promoted = chaoslab("promote", "pg-2")
    assert promoted.returncode == 0, promoted.stderr
    assert "Patroni leader: pg-2" in promoted.stdout, promoted.stdout
    switched = chaoslab("switch", "pg-2")
    assert switched.returncode == 0, switched.stderr
    assert json.loads(pasted(put))["price_cents"] == 3999, "writes should reach the new leader through HAProxy"

    wrong = chaoslab("switch", "pg-1")
    assert wrong.returncode == 1 and "promote pg-1" in wrong.stderr, wrong.stderr
    method = chaoslab("promote", "pg-1", "--method", "sql")
    assert method.returncode == 2 and "no --method" in method.stderr, method.stderr
    killed = chaoslab("fault", "kill", "pg-1")
    assert killed.returncode == 0, killed.stderr
    assert status_line(killed.stdout, "pg-1")[2] == "stopped", killed.stdout
    # Reads fall back to the leader once HAProxy's checks see pg-1 gone (two checks, 0.4 s).
    wait_until(lambda: json.loads(pasted(health))["status"] == "ok", service="api",
               expected="/health ok again with pg-1 down: the leader pg-2 serves reads and writes", timeout=10)

    # Patroni's own failover under `load`: a fault on the leader is measured, whatever its name.
    assert chaoslab("fault", "start", "pg-1").returncode == 0
    def pg_1_replica() -> bool:
        row = next((line for line in pasted(connect_lines(output, "patroni")[0]).splitlines() if " pg-1 " in line), "")
        return "Replica" in row and "running" in row
    wait_until(pg_1_replica, service="pg-1", expected="a running replica of pg-2 again (patronictl list)", timeout=60)
    with in_a_second_terminal("load", "--seconds", "30") as load:
        load.stdout.readline()
        assert chaoslab("fault", "kill", "pg-2").returncode == 0
        output_of_load = ctrl_c_once_clean_again(load)
    assert "failover: `fault kill pg-2`" in output_of_load, output_of_load
    rto = [line.split()[1] for line in printed(output_of_load, "rto_s")]
    assert rto and 0 < float(rto[0]) < 30, f"Patroni's failover should give an RTO:\n{output_of_load}"

    # The topology's links: every node cut from etcd, as `status` shows it, then healed.
    cut = chaoslab("fault", "blackhole", "etcd")
    assert cut.returncode == 0, cut.stderr
    shown = chaoslab("status").stdout
    assert "pg_1_to_etcd: timeout" in shown and "pg_2_to_etcd: timeout" in shown, shown
    assert chaoslab("fault", "heal").returncode == 0
    assert "network faults" not in chaoslab("status").stdout


def test_up_sentinel_prints_lines_that_work_and_the_api_follows_a_redis_failover(lab_on):
    output = lab_on("sentinel")
    ask_master = connect_lines(output, "sentinel")[0]
    first_port = status_line(output, "redis-ha-1")[1].split(":")[1]
    assert pasted(ask_master).split() == ["127.0.0.1", first_port], pasted(ask_master)
    post, get, _, _ = printed(output, "curl ")
    assert json.loads(pasted(post))["id"] == 1
    assert "x-cache: miss" in pasted(get).lower()
    assert_soon_a_hit(get)
    redis_ha_1 = connect_lines(output, "redis-ha-1")[0]
    assert "product:1" in pasted(redis_ha_1.replace("info replication", "keys '*'")), (
        "the API should cache in the Sentinel group's master, not in the brief's Redis")

    killed = chaoslab("fault", "kill", "redis-ha-1")
    assert killed.returncode == 0, killed.stderr
    second_port = status_line(output, "redis-ha-2")[1].split(":")[1]
    wait_until(lambda: pasted(ask_master).split() == ["127.0.0.1", second_port], service="sentinel",
               expected=f"the Sentinels to name redis-ha-2 (port {second_port}) master", timeout=60)
    assert_soon_a_hit(get)   # the new master's cache, filled again
    # The other Sentinels learn the new master from the first one's hello messages (every 2 s),
    # so `status`, which wants all of them to agree, may lag the Sentinel asked above.
    wait_until(lambda: status_says("Redis master (Sentinels): redis-ha-2"), service="sentinel",
               expected="`status` to report the Sentinels agreeing on redis-ha-2", timeout=30, interval=0.5)


def status_says(text: str) -> bool:
    """Whether `status` prints ``text``; if not, raise with its first line, so that a wait
    that runs out says what `status` said instead."""
    first_line = chaoslab("status").stdout.splitlines()[0]
    assert text in first_line, first_line
    return True
