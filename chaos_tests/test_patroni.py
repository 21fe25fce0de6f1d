"""Bonus: automatic failover with Patroni and etcd, under the failover workload.

The same workload, steps and checkers as part F, against the same API, but nobody
promotes and nobody touches HAProxy: Patroni elects a new leader through etcd, and
HAProxy follows Patroni's REST API (``/primary``, ``/replica``). Each scenario breaks
the current leader, whichever node it is, while the workload writes through the
unchanged API, and checks that a new primary is elected by itself, that writes come
back, that the old primary rejoins as a standby (with pg_rewind where its timeline
diverged). With ``synchronous_mode`` on, no acknowledged write may be lost.

The Patroni stack is started once per session, and only when one of these tests
runs; between tests it is brought back to a leader and a streaming standby with no
data (whichever node leads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import pytest

from chaoslab import pg, steps
from chaoslab.checkers import FAULT, NEW_PRIMARY
from chaoslab.patroni import LAB_TIMINGS
from chaoslab.patroni.base import WRITE_BACKEND, BasePatroniCluster
from chaoslab.sampler import Sampler
from chaoslab.topology import HAPROXY
from chaoslab.waits import holds_for, wait_until

from .patroni_deadlines import ELECTION_DEADLINE_S, REJOIN_DEADLINE_S, WRITE_DEADLINE_S

pytestmark = pytest.mark.patroni

# Long enough for the leader key to expire for sure: its lease, plus one loop of the other node.
PAUSE_S = LAB_TIMINGS.ttl + 2 * LAB_TIMINGS.loop_wait
# After a resume, the old leader's Patroni needs one loop to see it lost the key and demote.
DEMOTE_AFTER_RESUME_S = LAB_TIMINGS.loop_wait + LAB_TIMINGS.retry_timeout + 2
# How long HAProxy may still list a node that Patroni already stopped calling primary:
# one check interval plus the check timeout (haproxy-patroni.cfg), and a margin.
HAPROXY_FOLLOWS_S = 0.5 + 1.0 + 0.5


def _thaw_after_the_lease(lab, leader: str, fault_at: float) -> None:
    # The fault's length: the old leader stays frozen past its lease, and all along the lead
    # stays with the other node (watched, not slept through).
    new_leader = lab.other(leader)
    assert holds_for(lambda: lab.leader() == new_leader, seconds=max(0.0, fault_at + PAUSE_S - time.monotonic()),
                     interval=0.5), f"{new_leader} lost the lead while {leader} was still frozen: {lab.members()}"
    lab.resume_node(leader)


@dataclass(frozen=True)
class LeaderFault:
    """What is done to the leader (in French, for the report), how, and how it comes back.

    ``bring_back`` runs once writes are back: the machine restarts, or the frozen node
    thaws; the rejoin itself is Patroni's. ``kind`` says which failovers its figures
    compare with (a switchover is no fault: it has no RTO).
    """

    description: str
    apply: Callable[[BasePatroniCluster, str, str], None]                   # (lab, leader, standby)
    bring_back: Callable[[BasePatroniCluster, str, float], None] | None = None   # (lab, leader, fault time)
    kind: str = "automatic"


LEADER_FAULTS = {
    "kill_postgres": LeaderFault("SIGKILL du PostgreSQL du leader, Patroni restant en vie",
                                 lambda lab, leader, _: lab.kill_postgres(leader)),
    "kill_node": LeaderFault("SIGKILL de Patroni et de PostgreSQL du leader (nœud perdu), redémarré ensuite",
                             lambda lab, leader, _: lab.kill_node(leader),
                             bring_back=lambda lab, leader, _: lab.start_node(leader)),
    "pause_node": LeaderFault(f"SIGSTOP de Patroni et de PostgreSQL du leader, SIGCONT {PAUSE_S} s plus tard",
                              lambda lab, leader, _: lab.pause_node(leader), bring_back=_thaw_after_the_lease),
    "switchover": LeaderFault("bascule planifiée : `patronictl switchover --force`",
                              lambda lab, leader, standby: lab.switchover(leader, standby), kind="planned"),
}


def _log_offset(lab, node: str) -> int:
    return lab.log_path(node).stat().st_size


def _rewound_since(lab, node: str, offset: int) -> bool:
    with open(lab.log_path(node), errors="replace") as log:
        log.seek(offset)
        text = log.read()
    return "running pg_rewind from" in text and "pg_rewind exit code=0" in text


def _assert_old_primary_never_writable(old: str, probe: Sampler, back_at: float) -> float:
    """No split brain on the node itself: after a short demotion delay, its PostgreSQL is a
    standby or down at every sample; returns how long it still said primary once back."""
    primary_at = [at for at, role in probe.samples if at >= back_at and role == "primary"]
    late = [round(at - back_at, 2) for at in primary_at if at - back_at > DEMOTE_AFTER_RESUME_S]
    assert not late, (f"{old} was still a primary {late} s after it came back: a second primary "
                      f"(allowed {DEMOTE_AFTER_RESUME_S} s for Patroni to demote it)")
    return (max(primary_at) - back_at) if primary_at else 0.0


def _assert_one_write_server(haproxy: Sampler, old: str, *, after: float) -> None:
    """HAProxy never had two write servers, and none was the old primary from ``after`` on."""
    both = [round(at, 2) for at, up in haproxy.samples if isinstance(up, set) and len(up) > 1]
    assert not both, f"HAProxy routed writes to two nodes at once at {both[:5]}"
    stale = [round(at - after, 2) for at, up in haproxy.samples if at >= after and isinstance(up, set) and old in up]
    assert not stale, f"HAProxy still routed writes to the old primary {old} at +{stale[:5]} s"


def _run_scenario(lab, api, measure, request, *, scenario: str, synchronous: bool) -> tuple[str, steps.FailoverVerdict]:
    fault = LEADER_FAULTS[scenario]
    old = lab.leader()
    standby = lab.other(old)
    log_offset = _log_offset(lab, old)
    workload = steps.failover_workload(api, max_ops=60000, max_seconds=180)
    history = workload.history
    haproxy = Sampler(lambda: lab.haproxy_servers_up(WRITE_BACKEND))
    old_role = Sampler(lambda: lab.sql_role(old), interval=0.1)
    with workload, haproxy, old_role:
        steps.wait_for_new_acks(workload, 30)
        fault_at = time.monotonic()
        fault.apply(lab, old, standby)
        if fault.kind != "planned":   # a switchover is no fault: it has no RTO
            history.mark(FAULT)
        new = lab.wait_new_leader(old, timeout=ELECTION_DEADLINE_S)   # no human step
        elected_at = history.mark(NEW_PRIMARY).time
        steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)
        assert lab.node_behind_haproxy() == new, f"writes are back, but HAProxy does not send them to {new}"
        steps.wait_for_new_acks(workload, 20)
        back_at = None
        if fault.bring_back is not None:
            fault.bring_back(lab, old, fault_at)
            back_at = history.mark("old-primary-back").time
        lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
        history.mark("rejoined")
        steps.wait_for_new_acks(workload, 20)

    verdict = steps.judge_failover(history, steps.present_names(lab, HAPROXY), measure, request, kind=fault.kind,
                                   scenario=scenario, fault=fault.description,
                                   synchronous="on" if synchronous else "off", old_primary=old, new_primary=new)
    measure("pg_rewind", "yes" if _rewound_since(lab, old, log_offset) else "no")
    assert new != old, "the same node still leads: no new primary was elected"
    verdict.assert_sound()
    _assert_one_write_server(haproxy, old, after=elected_at + HAPROXY_FOLLOWS_S)
    if back_at is not None:
        _assert_one_write_server(haproxy, old, after=back_at)
        writable_for = _assert_old_primary_never_writable(old, old_role, back_at)
        measure("old_primary_writable_after_return_s", round(writable_for, 3), "s")
    assert lab.sql_role(old) == "standby", f"{old} did not come back as a standby"
    if synchronous:
        verdict.assert_nothing_lost("synchronous_mode")
    return old, verdict


# -- scenarios ------------------------------------------------------------------------------------
def test_leader_postgres_killed(patroni_lab, patroni_api, measure, request, synchronous):
    """PostgreSQL crashes under a live Patroni: with primary_start_timeout 0, Patroni fails over
    instead of restarting it in place, then brings the old node back as a standby."""
    _run_scenario(patroni_lab, patroni_api, measure, request, scenario="kill_postgres", synchronous=synchronous)


def test_leader_node_lost(patroni_lab, patroni_api, measure, request, synchronous):
    """Patroni and PostgreSQL die together: the leader key expires (ttl) and the standby takes over."""
    _run_scenario(patroni_lab, patroni_api, measure, request, scenario="kill_node", synchronous=synchronous)


def test_leader_paused_then_resumed_is_no_second_primary(patroni_lab, patroni_api, measure, request, synchronous):
    """A frozen leader loses its key; thawed, it must demote itself, never take writes, and rejoin."""
    old, _ = _run_scenario(patroni_lab, patroni_api, measure, request, scenario="pause_node",
                           synchronous=synchronous)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        with pg.connect(patroni_lab.endpoint(old), patroni_lab.creds) as conn:
            conn.execute("INSERT INTO products (name, price_cents) VALUES ('direct-to-old-primary', 1)")


def test_planned_switchover(patroni_lab, patroni_api, measure, request, synchronous):
    """patronictl switchover: the leader hands over cleanly, so nothing acknowledged is lost."""
    _, verdict = _run_scenario(patroni_lab, patroni_api, measure, request, scenario="switchover",
                               synchronous=synchronous)
    verdict.assert_nothing_lost("a planned switchover")


@pytest.mark.parametrize("synchronous", [False], ids=["async"])
def test_old_primary_rejoins_with_pg_rewind(patroni_lab, patroni_api, measure, synchronous):
    """The old primary's timeline diverges, and Patroni brings it back with pg_rewind, not a new clone.

    The standby is lost first, so the primary takes asynchronous writes alone; then the
    primary is lost too. The standby comes back first and is elected (it lags by far less
    than maximum_lag_on_failover); when the old primary comes back, its WAL holds writes
    the new timeline never had, so Patroni rewinds it and it streams from the new leader.
    """
    lab, api = patroni_lab, patroni_api
    old = lab.leader()
    standby = lab.other(old)
    lab.kill_node(standby)
    diverged = [f"diverged-{i}" for i in range(20)]
    for name in diverged:   # acknowledged by the old primary alone
        assert steps.post_product(api, name).status_code == 201, "the primary refused writes with its standby gone"
    lab.kill_node(old)
    lab.start_node(standby)
    new = lab.wait_new_leader(old, timeout=ELECTION_DEADLINE_S)
    assert new == standby
    steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)

    offset = _log_offset(lab, old)
    lab.start_node(old)
    lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
    assert _rewound_since(lab, old, offset), f"{old} did not rejoin through a successful pg_rewind (log: {lab.log_path(old)})"

    assert steps.post_product(api, "after-rejoin").status_code == 201
    lsn = pg.current_lsn(lab.endpoint(new), lab.creds)
    wait_until(lambda: pg.replayed(lab.endpoint(old), lab.creds, lsn), service=old,
               expected=f"to replay the new leader's WAL up to {lsn}", timeout=20, log=lab.log_path(old))
    on_old = steps.present_names(lab, old)
    assert "after-rejoin" in on_old, "a write on the new leader did not reach the rewound node"
    kept = [name for name in diverged if name in on_old]
    measure("rewound_writes", len(diverged) - len(kept))
    # pg_rewind throws the old timeline's tail away: what only the old primary had is gone.
    assert not kept, f"the rewound node kept writes that the new timeline never had: {kept[:5]}"
