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

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
import pytest

from chaoslab import checkers, pg, steps
from chaoslab.checkers import FAULT, NEW_PRIMARY
from chaoslab.patroni import LAB_TIMINGS
from chaoslab.patroni.config import ETCD, NODES
from chaoslab.patroni.base import WRITE_BACKEND, BasePatroniCluster
from chaoslab.topology import HAPROXY
from chaoslab.waits import holds_for, wait_until

pytestmark = pytest.mark.patroni

# A lost leader is replaced within ttl + loop_wait; the rest is promotion, HAProxy's
# checks (about 1 s) and the API's reconnection. Generous, but bounded.
ELECTION_DEADLINE_S = LAB_TIMINGS.leader_loss_bound + 20
WRITE_DEADLINE_S = ELECTION_DEADLINE_S + 15
REJOIN_DEADLINE_S = 90
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


# -- observers that run beside the workload ------------------------------------------------------------
@dataclass
class Sampler:
    """Polls ``probe`` every ``interval`` in a thread; keeps (monotonic time, answer) samples,
    stamped when the answer came; ``asked`` gives the same answers stamped when the question was
    sent. A bound on how late a node still said something ("primary past its lease", "primary
    after the new leader") reads ``asked``: the node answered after that time, however long a
    busy machine took to deliver it."""

    probe: Callable[[], object]
    interval: float = 0.05
    samples: list[tuple[float, object]] = field(default_factory=list)
    _asked_at: list[float] = field(default_factory=list)

    @property
    def asked(self) -> list[tuple[float, object]]:
        return [(asked_at, answer) for asked_at, (_, answer) in zip(self._asked_at, self.samples)]

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="patroni-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            asked_at = time.monotonic()
            try:
                answer = self.probe()
            except Exception as exc:  # an observer never stops the scenario
                answer = f"error: {type(exc).__name__}"
            self._asked_at.append(asked_at)
            self.samples.append((time.monotonic(), answer))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(5)


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
        steps.wait_for_new_acks(workload, steps.ACKS_BEFORE_FAULT)
        fault_at = time.monotonic()
        fault.apply(lab, old, standby)
        if fault.kind != "planned":   # a switchover is no fault: it has no RTO
            history.mark(FAULT)
        new = lab.wait_new_leader(old, timeout=ELECTION_DEADLINE_S)   # no human step
        elected_at = history.mark(NEW_PRIMARY).time
        steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)
        assert lab.node_behind_haproxy() == new, f"writes are back, but HAProxy does not send them to {new}"
        steps.wait_for_new_acks(workload, steps.ACKS_AFTER_RECOVERY)
        back_at = None
        if fault.bring_back is not None:
            fault.bring_back(lab, old, fault_at)
            back_at = history.mark("old-primary-back").time
        lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
        history.mark("rejoined")
        steps.wait_for_new_acks(workload, steps.ACKS_AFTER_RECOVERY)

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


@pytest.mark.parametrize("synchronous", [False], ids=["async"], scope="module")
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


# -- network faults: the nodes' links to etcd, HAProxy's to their REST APIs (issue 14) ---------------
def _accepts_a_write(lab, node: str) -> bool:
    """Whether ``node``'s PostgreSQL commits a write sent to it directly, now (a probe row of the
    harness's own table; a standby, a stopped node or a stalled commit says no)."""
    try:
        return bool(pg.commit_marker(lab.endpoint(node), lab.creds))
    except psycopg.Error:
        return False


def _first(samples, wanted, after: float) -> float | None:
    return next((at for at, answer in samples if at >= after and answer == wanted), None)


def _last(samples, wanted, after: float) -> float | None:
    return max((at for at, answer in samples if at >= after and answer == wanted), default=None)


def _demoted_after(samples, cut_at: float) -> float | None:
    """Seconds from the cut to the first sample where the node's PostgreSQL says it is a standby
    (pg_is_in_recovery()), or None. Not the first that fails to say primary: a probe that
    cannot connect in time on a busy machine says nothing of the node's role."""
    return next((at - cut_at for at, answer in samples if at >= cut_at and answer == "standby"), None)


@pytest.mark.network
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
        steps.wait_for_new_acks(workload, steps.ACKS_BEFORE_FAULT)
        cut_at = history.mark(FAULT).time
        lab.partition(old, ETCD)
        cut_off = not lab.reaches(old, ETCD) and lab.reaches(old, new_node)   # the network's own word
        new = lab.wait_new_leader(old, timeout=ELECTION_DEADLINE_S)
        history.mark(NEW_PRIMARY)
        steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)
        steps.wait_for_new_acks(workload, steps.ACKS_AFTER_RECOVERY)
        lab.heal_network()
        healed = lab.reaches(old, ETCD)
        lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
        history.mark("rejoined")
        steps.wait_for_new_acks(workload, steps.ACKS_AFTER_RECOVERY)

    verdict = steps.judge_failover(history, steps.present_names(lab, HAPROXY), measure, request, kind="network",
                                   scenario="etcd_cut", fault="leader isolé d'etcd (partition)",
                                   synchronous="on" if synchronous else "off", old_primary=old, new_primary=new)
    assert cut_off, f"the partition should cut {old} from {ETCD} only, not from {new_node}"
    assert healed, f"{old} still could not reach {ETCD} once the partition healed"
    last_old_primary = _last(roles[old].samples, "primary", cut_at)
    first_new_primary = _first(roles[new].samples, "primary", cut_at)
    first_new_write = _first(writable[new].samples, True, cut_at)
    assert None not in (last_old_primary, first_new_primary, first_new_write), (
        f"the samplers missed a role: {old} primary until {last_old_primary}, {new} from {first_new_primary}")
    demoted_after = _demoted_after(roles[old].samples, cut_at)
    if demoted_after is not None:
        measure("demoted_after_s", round(demoted_after, 2), "s")
    measure("no_primary_s", round(first_new_primary - last_old_primary, 2), "s")
    measure("failsafe_mode", "off")   # as every baseline leaves it
    # Two primaries (two writable nodes) only if the old node said so to a question asked after
    # the new one's answer had come: an answer the old node gave before, delivered late by a
    # busy machine, is not one. None: no question after the cut got "primary" (a write).
    asked_old_primary = _last(roles[old].asked, "primary", cut_at)
    asked_old_write = _last(writable[old].asked, True, cut_at)
    assert asked_old_primary is None or asked_old_primary < first_new_primary, (
        f"{old} said primary when asked {asked_old_primary - first_new_primary:.2f} s after {new} had said so: "
        f"two primaries")
    assert asked_old_write is None or asked_old_write < first_new_write, (
        f"{old} accepted a direct write sent {asked_old_write - first_new_write:.2f} s after {new} had accepted "
        f"one: two writable nodes")
    assert asked_old_primary is None or asked_old_primary - cut_at < LAB_TIMINGS.ttl, (
        f"{old} still said primary when asked {asked_old_primary - cut_at:.1f} s after it lost etcd: past its "
        f"leader key's lease ({LAB_TIMINGS.ttl} s)")
    verdict.assert_sound()
    if synchronous:
        verdict.assert_nothing_lost("synchronous_mode")


# How long etcd stays out of reach: the leader key's lease, then a loop and 2 s more. A leader
# demotes itself within loop_wait + retry_timeout of losing etcd, inside the lease; the writes of
# the outage's last seconds, sent once the lease is over (whenever it was last refreshed before
# the cut), show what Patroni decided: none acknowledged, or, with failsafe_mode, some.
ETCD_OUTAGE_S = LAB_TIMINGS.ttl + LAB_TIMINGS.loop_wait + 2


def _side_by_side(probe: Callable[[str], bool], nodes) -> list[bool]:
    """``probe`` of each node at once. A probe through a partition waits out its connection
    timeout (2 s): one node after the other, the watch's last probe ran up to 4 s past its window."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(probe, nodes))


@pytest.mark.network
@pytest.mark.parametrize("synchronous", [False], ids=["async"], scope="module")
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
        steps.wait_for_new_acks(workload, steps.ACKS_BEFORE_FAULT)
        cut_at = time.monotonic()
        for node in NODES:
            lab.partition(node, ETCD)
        # Writes sent from here on: past the lease, whatever Patroni decided holds.
        history.mark("lease-expired", at=cut_at + LAB_TIMINGS.ttl)
        # The outage's length, watched: no node reaches etcd all along (the network's own word).
        held = holds_for(lambda: not any(_side_by_side(lambda node: lab.reaches(node, ETCD), NODES)),
                         seconds=ETCD_OUTAGE_S,
                         interval=0.5)
        healed_at = history.mark("etcd-back").time
        lab.heal_network()
        lab.wait_replication(timeout=REJOIN_DEADLINE_S)
        steps.wait_for_writes_through_api(api, timeout=WRITE_DEADLINE_S)
        steps.wait_for_new_acks(workload, steps.ACKS_AFTER_RECOVERY)

    assert held, f"a node reached {ETCD} again before the outage's {ETCD_OUTAGE_S} s were over"
    late = checkers.writes_acked_between(history, "lease-expired", "etcd-back")
    during = [(at, answer) for at, answer in role.samples if at < healed_at]
    demoted_after = _demoted_after(during, cut_at)
    primary_until = _last([(at, answer) for at, answer in role.asked if at < healed_at], "primary", cut_at)
    measure("failsafe_mode", "on" if failsafe else "off")
    measure("writes_acked_without_etcd", len(late))
    if demoted_after is not None:
        measure("demoted_after_s", round(demoted_after, 2), "s")
    if failsafe:
        assert demoted_after is None, f"with failsafe_mode, {leader} was demoted {demoted_after:.1f} s into the etcd outage"
        assert late, "with failsafe_mode, no write was acknowledged in the etcd outage once the lease was over"
    else:
        assert demoted_after is not None, f"without failsafe_mode, {leader} was never demoted while etcd was out of reach"
        assert primary_until is None or primary_until - cut_at < LAB_TIMINGS.ttl, (
            f"without failsafe_mode, {leader} still said primary when asked {primary_until - cut_at:.1f} s after it "
            f"lost etcd: past its lease ({LAB_TIMINGS.ttl} s)")
        assert not late, (f"without failsafe_mode, {len(late)} writes were acknowledged after the leader lost "
                          "etcd's lease: a primary that cannot prove it leads")


# How long HAProxy stays cut off from the leader once it has no write server: a fault's length.
ROUTER_CUT_S = 3


@pytest.mark.network
@pytest.mark.parametrize("synchronous", [False], ids=["async"], scope="module")
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
        steps.wait_for_new_acks(workload, steps.ACKS_BEFORE_FAULT)
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
        steps.wait_for_new_acks(workload, steps.ACKS_AFTER_RECOVERY)

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
