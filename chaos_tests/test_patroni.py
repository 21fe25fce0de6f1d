"""Bonus: automatic failover with Patroni and etcd, under the failover workload.

The same workload and checkers as part F, against the same API, but nobody
promotes and nobody touches HAProxy: Patroni elects a new leader through etcd,
and HAProxy follows Patroni's REST API (``/primary``, ``/replica``). Each
scenario breaks the current leader, whichever node it is, while the workload
writes through the unchanged API, and checks that a new primary is elected by
itself, that writes come back, that the old primary rejoins as a standby (with
pg_rewind where its timeline diverged), and measures the time to recover and
the acknowledged writes lost. With ``synchronous_mode`` on, none may be lost.

The Patroni stack is started once per session, and only when one of these
tests runs; between tests it is brought back to a leader and a streaming
standby with no data (whichever node leads).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import requests

from chaoslab import checkers, pg, rundir
from chaoslab.patroni import LAB_TIMINGS
from chaoslab.patroni.base import WRITE_BACKEND
from chaoslab.topology import HAPROXY
from chaoslab.waits import wait_until
from chaoslab.workload import Workload

pytestmark = pytest.mark.patroni

REPORTS = Path(__file__).resolve().parent.parent / "reports" / "data"
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


# -- observers that run beside the workload ------------------------------------------------------------
@dataclass
class Sampler:
    """Polls ``probe`` every ``interval`` in a thread; keeps (monotonic time, answer) samples."""

    probe: Callable[[], object]
    interval: float = 0.05
    samples: list[tuple[float, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="patroni-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.probe()
            except Exception as exc:  # an observer never stops the scenario
                answer = f"error: {type(exc).__name__}"
            self.samples.append((time.monotonic(), answer))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(5)


# -- steps --------------------------------------------------------------------------------------------
def _post(api, name: str) -> requests.Response:
    return requests.post(f"{api.base_url}/products", json={"name": name, "price_cents": 100}, timeout=10)


def _wait_for_acks(workload: Workload, count: int, timeout: float = 20) -> None:
    wait_until(lambda: len(workload.acked_ids) >= count, service="api",
               expected=f"{count} acknowledged writes from the workload", timeout=timeout)


def _wait_for_writes_through_api(api, timeout: float = WRITE_DEADLINE_S) -> None:
    wait_until(lambda: _post(api, "after-failover").status_code == 201, service="api",
               expected="a write through the unchanged API to succeed after the failover",
               timeout=timeout, interval=0.1, log=api.log)


def _log_offset(lab, node: str) -> int:
    return lab.log_path(node).stat().st_size


def _log_since(lab, node: str, offset: int) -> str:
    with open(lab.log_path(node), errors="replace") as log:
        log.seek(offset)
        return log.read()


def _rewound(log_text: str) -> bool:
    return "running pg_rewind from" in log_text and "pg_rewind exit code=0" in log_text


def _present_names(lab) -> set[str]:
    """Names on the current primary, read through HAProxy's write frontend, as the API would."""
    with pg.connect(lab.endpoint(HAPROXY), lab.creds) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM products").fetchall()}


def _save(history, request, measure) -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    slug = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    timeline = REPORTS / f"timeline-patroni-{slug}.json"
    timeline.write_text(json.dumps(checkers.availability_timeline(history, bucket=0.1)))
    history.save(REPORTS / f"history-patroni-{slug}.json")
    measure.attach("timeline", str(timeline))


def _assert_old_primary_never_writable(lab, old: str, probe: Sampler, resumed_at: float) -> float:
    """No split brain on the node itself: after a short demotion delay, its PostgreSQL is a
    standby or down at every sample; returns how long it still said primary after the resume."""
    primary_at = [at for at, role in probe.samples if at >= resumed_at and role == "primary"]
    writable_for = (max(primary_at) - resumed_at) if primary_at else 0.0
    late = [round(at - resumed_at, 2) for at in primary_at if at - resumed_at > DEMOTE_AFTER_RESUME_S]
    assert not late, (f"{old} was still a primary {late} s after its resume: a second primary "
                      f"(allowed {DEMOTE_AFTER_RESUME_S} s for Patroni to demote it)")
    return writable_for


def _assert_one_write_server(haproxy: Sampler, old: str, *, after: float) -> None:
    """HAProxy never had two write servers, and none was the old primary from ``after`` on."""
    both = [round(at, 2) for at, up in haproxy.samples if isinstance(up, set) and len(up) > 1]
    assert not both, f"HAProxy routed writes to two nodes at once at {both[:5]}"
    stale = [round(at - after, 2) for at, up in haproxy.samples if at >= after and isinstance(up, set) and old in up]
    assert not stale, f"HAProxy still routed writes to the old primary {old} at +{stale[:5]} s"


def _recovery_time(history, since: float) -> float | None:
    """The RTO: the longest stretch, after ``since``, from the invoke of a write that was refused
    (or timed out) to the completion of the next acknowledged one. What a client lived through.

    Measured from the writes rather than from the fault: a switchover keeps taking writes
    until the old leader demotes, and a write can slip in while a node is being killed.
    0 if no write was refused; None if writes never came back.
    """
    writes = sorted(((invoke, done) for invoke, done in history.pairs()
                     if invoke.f == "write" and invoke.time >= since), key=lambda pair: pair[0].time)
    longest, refused_since = 0.0, None
    for invoke, done in writes:
        if done.type != "ok":
            refused_since = invoke.time if refused_since is None else refused_since
        elif refused_since is not None:
            longest, refused_since = max(longest, done.time - refused_since), None
    return None if refused_since is not None else longest


# -- the scenario runner ----------------------------------------------------------------------------
FAULTS = {
    "kill_postgres": "SIGKILL of the leader's PostgreSQL (Patroni alive)",
    "kill_node": "SIGKILL of the leader's Patroni and PostgreSQL (node lost)",
    "pause_node": f"SIGSTOP of the leader's Patroni and PostgreSQL for {PAUSE_S} s, then SIGCONT",
    "switchover": "patronictl switchover --force",
}


def _run_scenario(lab, api, measure, request, *, scenario: str, synchronous: bool):
    old = lab.leader()
    standby = lab.other(old)
    log_offset = _log_offset(lab, old)
    workload = Workload(api.base_url, writers=3, readers=1, max_ops=60000, max_seconds=180, request_timeout=3)
    history = workload.history
    haproxy = Sampler(lambda: lab.haproxy_servers_up(WRITE_BACKEND))
    old_role = Sampler(lambda: lab.sql_role(old), interval=0.1)
    resumed_at = None
    with workload, haproxy:
        _wait_for_acks(workload, 30)
        fault_at = history.mark("fault").time
        if scenario == "kill_postgres":
            lab.kill_postgres(old)
        elif scenario == "kill_node":
            lab.kill_node(old)
        elif scenario == "pause_node":
            lab.pause_node(old)
        elif scenario == "switchover":
            lab.switchover(old, standby)
        history.mark("fault-applied")

        new = lab.wait_new_leader(old, timeout=ELECTION_DEADLINE_S)   # no human step
        elected_at = time.monotonic()
        history.mark("promote")
        _wait_for_writes_through_api(api)
        _wait_for_acks(workload, len(workload.acked_ids) + 20)      # the workload itself writes again

        if scenario == "pause_node":
            # The fault's length, not a wait for a state: the old leader stays frozen past its lease.
            time.sleep(max(0.0, fault_at + PAUSE_S - time.monotonic()))
            with old_role:
                resumed_at = time.monotonic()
                lab.resume_node(old)
                history.mark("resume")
                lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
        else:
            if scenario == "kill_node":
                history.mark("restart-old")
                lab.start_node(old)   # the machine comes back; the rejoin itself is Patroni's
            lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
        history.mark("rejoined")
        _wait_for_acks(workload, len(workload.acked_ids) + 20)
        workload.stop()

    lost = checkers.check_lost_writes(history, _present_names(lab))
    rto = _recovery_time(history, fault_at)
    rejoin_log = _log_since(lab, old, log_offset)

    _save(history, request, measure)
    measure("scenario", scenario)
    measure("fault", FAULTS[scenario])
    measure("synchronous", "on" if synchronous else "off")
    measure("old_primary", old)
    measure("new_primary", new)
    measure("election_s", round(elected_at - fault_at, 3), "s")
    measure("rto_s", round(rto, 3) if rto is not None else "none", "s")
    measure("acked_writes", lost.acked)
    measure("lost_writes", lost.lost)
    measure("unknown_writes", lost.unknown)
    measure("failed_but_present_writes", lost.failed_but_present)
    measure("pg_rewind", "yes" if _rewound(rejoin_log) else "no")

    assert new != old, "the same node still leads: no new primary was elected"
    assert rto is not None, "writes through the API failed after the fault and never came back"
    _assert_one_write_server(haproxy, old, after=elected_at + HAPROXY_FOLLOWS_S)
    if resumed_at is not None:
        _assert_one_write_server(haproxy, old, after=resumed_at)
        writable_for = _assert_old_primary_never_writable(lab, old, old_role, resumed_at)
        measure("old_primary_writable_after_resume_s", round(writable_for, 3), "s")
    assert lab.sql_role(old) == "standby", f"{old} did not come back as a standby"
    if synchronous:
        assert lost.lost == 0, f"synchronous_mode lost acknowledged writes: {lost.lost_names[:10]}"
    return old, lost


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
    _, lost = _run_scenario(patroni_lab, patroni_api, measure, request, scenario="switchover",
                            synchronous=synchronous)
    assert lost.lost == 0, f"a planned switchover lost acknowledged writes: {lost.lost_names[:10]}"


@pytest.mark.parametrize("synchronous", [False], ids=["async"])
def test_old_primary_rejoins_with_pg_rewind(patroni_lab, patroni_api, measure, request, synchronous):
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
        assert _post(api, name).status_code == 201, "the primary refused writes with its standby gone"
    killed_at = time.monotonic()
    lab.kill_node(old)
    lab.start_node(standby)
    new = lab.wait_new_leader(old, timeout=ELECTION_DEADLINE_S)
    assert new == standby
    _wait_for_writes_through_api(api)
    rto = time.monotonic() - killed_at

    offset = _log_offset(lab, old)
    lab.start_node(old)
    lab.wait_rejoined(old, timeout=REJOIN_DEADLINE_S)
    log_text = _log_since(lab, old, offset)
    measure("scenario", "pg_rewind rejoin")
    measure("fault", "standby lost, then the leader lost; the standby comes back first and is elected")
    measure("synchronous", "off")
    measure("rto_s", round(rto, 3), "s")
    measure("pg_rewind", "yes" if _rewound(log_text) else "no")
    assert "running pg_rewind from" in log_text, f"{old} rejoined without pg_rewind (log: {lab.log_path(old)})"
    assert "pg_rewind exit code=0" in log_text, f"pg_rewind failed on {old} (log: {lab.log_path(old)})"

    assert _post(api, "after-rejoin").status_code == 201
    lsn = pg.current_lsn(lab.endpoint(new), lab.creds)
    wait_until(lambda: pg.replayed(lab.endpoint(old), lab.creds, lsn), service=old,
               expected=f"to replay the new leader's WAL up to {lsn}", timeout=20, log=lab.log_path(old))
    with pg.connect(lab.endpoint(old), lab.creds) as conn:
        on_old = {row[0] for row in conn.execute("SELECT name FROM products").fetchall()}
    assert "after-rejoin" in on_old, "a write on the new leader did not reach the rewound node"
    kept = [name for name in diverged if name in on_old]
    measure("acked_writes", len(diverged))
    measure("lost_writes", len(diverged) - len(kept))
    measure("unknown_writes", 0)
    # pg_rewind throws the old timeline's tail away: what only the old primary had is gone.
    assert not kept, f"the rewound node kept writes that the new timeline never had: {kept[:5]}"


INNER_LAB = """
import json, threading
from chaoslab.local.patroni import PatroniCluster
lab = PatroniCluster()
lab.start()
nodes = {name: [lab.endpoint(name).port, node.rest.port] for name, node in lab.nodes.items()}
ports = [port for pair in nodes.values() for port in pair] + [lab.endpoint(s).port for s in ("etcd", "haproxy", "redis")]
print(json.dumps({"run": str(lab.run_dir.path), "ports": ports}), flush=True)
threading.Event().wait(120)
"""


def test_a_killed_patroni_run_is_reaped_by_the_next(tmp_path):
    """Patroni starts PostgreSQL in a session of its own; a SIGKILLed run still leaves nothing
    once the next run has reaped it: no process in its directory, no port taken."""
    repo = Path(__file__).resolve().parent.parent
    inner = subprocess.Popen([sys.executable, "-c", INNER_LAB], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONPATH=str(repo)), start_new_session=True)
    run = None
    try:
        line = inner.stdout.readline()
        lab = json.loads(line) if line.startswith("{") else pytest.fail(f"the inner lab did not start: {line}")
        run = Path(lab["run"])
        postgres = [pid for pid in _processes_in(run) if "postgres" in _cmdline(pid)]
        assert len(postgres) >= 2, "the inner lab should run two PostgreSQL servers"
        os.killpg(inner.pid, signal.SIGKILL)   # the harness and nothing else: its servers live on
        inner.wait(10)
        assert _processes_in(run), "a SIGKILLed run should leave its servers for the reaper"
        rundir.reap_abandoned_runs()
        assert not run.exists(), f"{run} was not reaped"
        assert _processes_in(run) == [], "processes of the killed run survived the reaper"
        assert [port for port in lab["ports"] if not rundir._port_free(port)] == []
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait(10)
        if run is not None and run.exists():   # a failed assertion must not leave the servers behind
            rundir.reap_run(run)


def _processes_in(run: Path) -> list[int]:
    """Live processes whose working directory is in the run (a zombie holds nothing)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            inside = os.readlink(proc / "cwd").startswith(str(run))
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if inside and state != "Z":
            found.append(int(proc.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
