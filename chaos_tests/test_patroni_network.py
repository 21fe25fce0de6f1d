"""Bonus: Patroni under network faults (issue 14): the nodes' links to etcd, HAProxy's to
their REST APIs. The same Patroni stack, fixtures and failover workload as test_patroni.py;
a file of their own so that `make test`'s workers can run them beside the leader faults.
"""

from __future__ import annotations

import contextlib
import time

import psycopg
import pytest

from chaoslab import checkers, pg, steps
from chaoslab.checkers import FAULT, NEW_PRIMARY
from chaoslab.patroni import LAB_TIMINGS
from chaoslab.patroni.base import WRITE_BACKEND
from chaoslab.patroni.config import ETCD, NODES
from chaoslab.sampler import Sampler, first, last
from chaoslab.topology import HAPROXY
from chaoslab.waits import holds_for, wait_until

from .patroni_deadlines import ELECTION_DEADLINE_S, REJOIN_DEADLINE_S, WRITE_DEADLINE_S

pytestmark = [pytest.mark.patroni, pytest.mark.network]


def _accepts_a_write(lab, node: str) -> bool:
    """Whether ``node``'s PostgreSQL commits a write sent to it directly, now (a probe row of the
    harness's own table; a standby, a stopped node or a stalled commit says no)."""
    try:
        return bool(pg.commit_marker(lab.endpoint(node), lab.creds))
    except psycopg.Error:
        return False


def _demoted_after(samples, cut_at: float) -> float | None:
    """Seconds from the cut to the first sample where the node's PostgreSQL says it is a standby
    (pg_is_in_recovery()), or None. Not the first that fails to say primary: a probe that
    cannot connect in time on a busy machine says nothing of the node's role."""
    return next((at - cut_at for at, answer in samples if at >= cut_at and answer == "standby"), None)


def test_leader_cut_off_from_etcd_demotes_itself_before_another_is_elected(patroni_lab, patroni_api, measure,
                                                                            request, synchronous):
    """The leader partitioned from etcd; the node itself is fine and still reaches the other.
    It cannot renew its leader key, so Patroni demotes it (within loop_wait + retry_timeout),
    before the key expires (ttl) and the other node is elected: at no moment do both nodes
    accept writes, as each node's own pg_is_in_recovery() and direct writes to each say.
    Once the link heals, the old leader rejoins as a standby."""
    lab, api = patroni_lab, patroni_api
    old = lab.leader()
    new_node = lab.other(old)
    roles = {node: Sampler(lambda node=node: lab.sql_role(node)) for node in (old, new_node)}
    writable = {node: Sampler(lambda node=node: _accepts_a_write(lab, node), interval=0.1) for node in (old, new_node)}
    workload = steps.failover_workload(api, max_ops=60000, max_seconds=180)
    history = workload.history
    with contextlib.ExitStack() as observers:
        for observer in (workload, *roles.values(), *writable.values()):
            observers.enter_context(observer)
        steps.wait_for_new_acks(workload, 30)
        cut_at = history.mark(FAULT).time
        lab.partition(old, ETCD)
        cut_off = not lab.reaches(old, ETCD) and lab.reaches(old, new_node)   # the network's own word
        new = lab.wait_new_leader(old, timeout=ELECTION_DEADLINE_S)
        history.mark(NEW_PRIMARY)
        steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)
        steps.wait_for_new_acks(workload, 20)
        lab.heal_network()
        healed = lab.reaches(old, ETCD)
        lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
        history.mark("rejoined")
        steps.wait_for_new_acks(workload, 20)

    verdict = steps.judge_failover(history, steps.present_names(lab, HAPROXY), measure, request, kind="network",
                                   scenario="etcd_cut", fault="leader isolé d'etcd (partition)",
                                   synchronous="on" if synchronous else "off", old_primary=old, new_primary=new)
    assert cut_off, f"the partition should cut {old} from {ETCD} only, not from {new_node}"
    assert healed, f"{old} still could not reach {ETCD} once the partition healed"
    last_old_primary = last(roles[old].samples, "primary", cut_at)
    first_new_primary = first(roles[new].samples, "primary", cut_at)
    last_old_write = last(writable[old].samples, True, cut_at)
    first_new_write = first(writable[new].samples, True, cut_at)
    assert None not in (last_old_primary, first_new_primary, first_new_write), (
        f"the samplers missed a role: {old} primary until {last_old_primary}, {new} from {first_new_primary}")
    demoted_after = _demoted_after(roles[old].samples, cut_at)
    if demoted_after is not None:
        measure("demoted_after_s", round(demoted_after, 2), "s")
    measure("no_primary_s", round(first_new_primary - last_old_primary, 2), "s")
    measure("failsafe_mode", "off")   # as every baseline leaves it
    assert last_old_primary < first_new_primary, (
        f"{old} still said primary {last_old_primary - first_new_primary:.2f} s after {new} did: two primaries")
    assert last_old_write is None or last_old_write < first_new_write, (
        f"{old} accepted a direct write {last_old_write - first_new_write:.2f} s after {new} did: two writable nodes")
    assert last_old_primary - cut_at < LAB_TIMINGS.ttl, (
        f"{old} still said primary {last_old_primary - cut_at:.1f} s after it lost etcd: past its leader key's "
        f"lease ({LAB_TIMINGS.ttl} s)")
    verdict.assert_sound()
    if synchronous:
        verdict.assert_nothing_lost("synchronous_mode")


# How long etcd stays out of reach: past the leader key's lease and a demotion, so that each
# outcome has time to show.
ETCD_OUTAGE_S = LAB_TIMINGS.ttl + LAB_TIMINGS.loop_wait + LAB_TIMINGS.retry_timeout + 2


@pytest.mark.parametrize("synchronous", [False], ids=["async"])
@pytest.mark.parametrize("failsafe", [False, True], ids=["failsafe_off", "failsafe_on"])
def test_etcd_unreachable_from_every_node(patroni_lab, patroni_api, measure, synchronous, failsafe):
    """Every node partitioned from etcd for longer than the leader key's lease. Without
    failsafe_mode the leader cannot prove it still leads, so Patroni makes it read-only: writes
    stop until etcd is back, though nothing is wrong with PostgreSQL. With failsafe_mode, the
    leader reaches every member's REST API (POST /failsafe) and stays primary: writes go on."""
    lab, api = patroni_lab, patroni_api
    lab.set_failsafe_mode(failsafe)
    leader = lab.leader()
    role = Sampler(lambda: lab.sql_role(leader))
    workload = steps.failover_workload(api, max_ops=60000, max_seconds=120)
    history = workload.history
    with workload, role:
        steps.wait_for_new_acks(workload, 30)
        cut_at = time.monotonic()
        for node in NODES:
            lab.partition(node, ETCD)
        # Writes sent in the outage's second half: past the lease, whatever Patroni decided holds.
        history.mark("lease-expired", at=cut_at + ETCD_OUTAGE_S / 2)
        # The outage's length, watched: no node reaches etcd all along (the network's own word).
        held = holds_for(lambda: not any(lab.reaches(node, ETCD) for node in NODES), seconds=ETCD_OUTAGE_S,
                         interval=0.5)
        healed_at = history.mark("etcd-back").time
        lab.heal_network()
        lab.wait_replication(timeout=REJOIN_DEADLINE_S)
        steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)
        steps.wait_for_new_acks(workload, 20)

    assert held, f"a node reached {ETCD} again before the outage's {ETCD_OUTAGE_S} s were over"
    late = checkers.writes_acked_between(history, "lease-expired", "etcd-back")
    during = [(at, answer) for at, answer in role.samples if at < healed_at]
    demoted_after = _demoted_after(during, cut_at)
    primary_until = last(during, "primary", cut_at)
    measure("failsafe_mode", "on" if failsafe else "off")
    measure("writes_acked_without_etcd", len(late))
    if demoted_after is not None:
        measure("demoted_after_s", round(demoted_after, 2), "s")
    if failsafe:
        assert demoted_after is None, f"with failsafe_mode, {leader} was demoted {demoted_after:.1f} s into the etcd outage"
        assert late, "with failsafe_mode, no write was acknowledged in the second half of the etcd outage"
    else:
        assert demoted_after is not None, f"without failsafe_mode, {leader} was never demoted while etcd was out of reach"
        assert primary_until is None or primary_until - cut_at < LAB_TIMINGS.ttl, (
            f"without failsafe_mode, {leader} still said primary {primary_until - cut_at:.1f} s after it lost etcd: "
            f"past its lease ({LAB_TIMINGS.ttl} s)")
        assert not late, (f"without failsafe_mode, {len(late)} writes were acknowledged after the leader lost "
                          "etcd's lease: a primary that cannot prove it leads")


# How long HAProxy stays cut off from the leader once it has no write server: a fault's length.
ROUTER_CUT_S = 3


@pytest.mark.parametrize("synchronous", [False], ids=["async"])
def test_haproxy_cut_off_from_the_leader_is_an_outage_patroni_does_not_see(patroni_lab, patroni_api, measure,
                                                                            synchronous):
    """HAProxy partitioned from the leader: its checks of the leader's Patroni REST API go
    unanswered (and, where packets are dropped, its sessions too), while Patroni, etcd and
    PostgreSQL are fine. HAProxy marks the leader down and has no write server left, so writes
    are refused at once for as long as the partition lasts, and Patroni fails nothing over: the
    leader keeps its key, since nothing is wrong in its view. Once healed, writes come back as
    soon as HAProxy's checks pass again. Nothing acknowledged is lost."""
    lab, api = patroni_lab, patroni_api
    leader = lab.leader()
    workload = steps.failover_workload(api, max_ops=60000, max_seconds=120)
    history = workload.history
    with workload:
        steps.wait_for_new_acks(workload, 20)
        cut_at = time.monotonic()
        lab.partition(HAPROXY, leader)
        assert not lab.reaches(HAPROXY, leader), f"the partition left a path from {HAPROXY} to {leader}"
        wait_until(lambda: leader not in lab.haproxy_servers_up(WRITE_BACKEND), service=HAPROXY,
                   expected=f"{leader} marked down once cut off from HAProxy", timeout=10, interval=0.05,
                   log=lab.log_path(HAPROXY))
        marked_at = history.mark("no-write-server").time
        # The partition's length, watched: HAProxy keeps no write server, Patroni its leader.
        held = holds_for(lambda: not lab.haproxy_servers_up(WRITE_BACKEND) and lab.leader() == leader,
                         seconds=ROUTER_CUT_S)
        healed_at = history.mark("router-healed").time
        lab.heal_network()
        steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)
        back_at = time.monotonic()
        steps.wait_for_new_acks(workload, 20)

    measure("haproxy_marked_down_s", round(marked_at - cut_at, 2), "s")
    measure("writes_back_after_heal_s", round(back_at - healed_at, 2), "s")
    acked_while_cut = checkers.writes_acked_between(history, "no-write-server", "router-healed")
    lost = checkers.check_lost_writes(history, steps.present_names(lab, HAPROXY))
    measure("lost_writes", lost.lost)
    assert held, (f"while {leader} was cut off from HAProxy, HAProxy found a write server again or Patroni "
                  "changed leader")
    assert lab.leader() == leader, f"Patroni failed over from {leader}, which was only cut off from HAProxy"
    assert not acked_while_cut, (
        f"{len(acked_while_cut)} writes were acknowledged while HAProxy had no write server")
    assert lost.lost == 0, f"{lost.lost} acknowledged writes are missing after a partition of the router alone"
