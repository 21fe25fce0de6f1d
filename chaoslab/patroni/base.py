"""The Patroni topology, whatever runs it: what only needs connections.

etcd, two PostgreSQL nodes run by Patroni (``pg-1``, ``pg-2``), HAProxy asking each
node's REST API who it is (haproxy/haproxy-patroni.cfg), and Redis. A backend
(``chaoslab.local.patroni.PatroniCluster``: local processes; ``chaoslab.compose.patroni``:
containers) starts, signals and reaches them; the questions asked of the cluster
(who leads, does the standby stream, does HAProxy agree), the baseline and the
planned switchover only need SQL, HTTP and HAProxy's runtime API, so they live
here once and the scenarios never branch on the backend.

Services, by name: ``etcd``, ``pg-1``, ``pg-2``, ``haproxy``, ``redis``; and, for
the API and the scenarios written for the brief's stack, ``db-replica`` means "a
standby, through HAProxy's /replica frontend".
"""

from __future__ import annotations

import abc
import csv
import io
import subprocess
from pathlib import Path

import redis as redis_client
import requests
from psycopg import sql

from .. import haproxy_config, pg
from ..network import LinkFaults
from ..errors import LabError
from ..phases import phase
from ..topology import HAPROXY, REDIS, REPLICA, Credentials, Endpoint
from ..waits import wait_until
from .config import ETCD, LAB_TIMINGS, NODE_NAME_SETTING, NODES, SCOPE, Timings

WRITE_BACKEND = haproxy_config.WRITE_BACKEND   # servers UP here get writes (/primary said 200)
READ_BACKEND = haproxy_config.READ_BACKEND     # servers UP here get reads (/replica said 200)
SERVICES = (ETCD, *NODES, HAPROXY, REDIS)


class BasePatroniCluster(LinkFaults, abc.ABC):
    """etcd + two Patroni nodes + HAProxy + Redis; a backend says where they are and how to break them."""

    name = "patroni"
    creds: Credentials
    timings: Timings

    def __init__(self, creds: Credentials, timings: Timings = LAB_TIMINGS) -> None:
        self.creds = creds
        self.timings = timings

    # -- what a backend provides ---------------------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None:
        """etcd, then pg-1 (it bootstraps), the application's database, pg-2 (it clones itself from
        the leader), Redis and HAProxy; returns once pg-2 streams and HAProxy agrees."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything and remove every trace of the run."""

    @abc.abstractmethod
    def endpoint(self, service: str) -> Endpoint:
        """Where the harness reaches a service (haproxy: the write frontend; db-replica: the read one)."""

    @abc.abstractmethod
    def rest_endpoint(self, node: str) -> Endpoint:
        """Where the harness reaches a node's Patroni REST API."""

    @abc.abstractmethod
    def log_path(self, service: str) -> Path | str:
        """A node's log is a file (Patroni's log and PostgreSQL's stderr) on every backend."""

    @abc.abstractmethod
    def rest_may_answer(self, node: str) -> bool:
        """False when asking the node's REST API is pointless (stopped or frozen): it would only time out."""

    @abc.abstractmethod
    def kill_postgres(self, node: str) -> None:
        """SIGKILL every PostgreSQL process of the node at once: it crashes, Patroni lives on."""

    @abc.abstractmethod
    def kill_node(self, node: str) -> None:
        """The node is lost: Patroni and PostgreSQL die together."""

    @abc.abstractmethod
    def pause_node(self, node: str) -> None:
        """Freeze Patroni and PostgreSQL together (SIGSTOP, the cgroup freezer): sockets stay open."""

    @abc.abstractmethod
    def resume_node(self, node: str) -> None: ...

    @abc.abstractmethod
    def start_node(self, node: str) -> None:
        """Start the node's Patroni (it starts, rewinds or clones PostgreSQL) and wait for its REST API."""

    @abc.abstractmethod
    def _run_patronictl(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """patronictl with a node's config (it names etcd), wherever patronictl is."""

    @abc.abstractmethod
    def haproxy_command(self, line: str) -> str:
        """One command on HAProxy's runtime API."""

    @abc.abstractmethod
    def _ensure_running(self) -> None:
        """Every service resumed if frozen and started if stopped (the baseline's first step)."""

    @abc.abstractmethod
    def patroni_version(self) -> str: ...

    @abc.abstractmethod
    def describe(self) -> dict[str, dict]: ...

    def diagnostics(self) -> Path | str:
        """Where to look when the cluster as a whole does not get where it should."""
        return self.run_dir.path

    # -- where things are ---------------------------------------------------------------------------
    def haproxy_read_endpoint(self) -> Endpoint:
        return self.endpoint(REPLICA)

    def services(self) -> tuple[str, ...]:
        return SERVICES

    def dsn(self, service: str, role: str = "app") -> str:
        return pg.conninfo(self.endpoint(service), self.creds, role=role)

    def protocol(self, source: str, target: str) -> str:
        """HAProxy's link to a node is its checks of Patroni's REST API (HTTP)."""
        return "http" if source == HAPROXY and target in NODES else super().protocol(source, target)

    def redis(self) -> redis_client.Redis:
        endpoint = self.endpoint(REDIS)
        return redis_client.Redis(host=endpoint.host, port=endpoint.port, socket_timeout=2,
                                  socket_connect_timeout=2, decode_responses=True)

    def rest_get(self, node: str, path: str, timeout: float = 1.0) -> requests.Response:
        return requests.get(f"http://{self.rest_endpoint(node)}{path}", timeout=timeout)

    def _create_application_database(self, leader: str) -> None:
        """The brief's app user, appdb and products table, once, on the first leader."""
        creds = self.creds
        with pg.connect(self.endpoint(leader), creds, role="superuser", dbname="postgres") as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (creds.app_user,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(creds.app_user), sql.Literal(creds.app_password)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (creds.database,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(creds.database), sql.Identifier(creds.app_user)))
        pg.ensure_products_table(self.endpoint(leader), creds)

    # -- roles ------------------------------------------------------------------------------------
    def members(self) -> dict[str, dict]:
        """{node: its entry in GET /cluster} (role leader, sync_standby or replica), as etcd says,
        asked through any Patroni that answers; empty if none does."""
        for node in NODES:
            if not self.rest_may_answer(node):
                continue
            try:
                return {member["name"]: member for member in self.rest_get(node, "/cluster").json()["members"]}
            except Exception:
                continue
        return {}

    def leader(self) -> str | None:
        """The node holding the leader key."""
        return next((name for name, member in self.members().items() if member.get("role") == "leader"), None)

    def other(self, node: str) -> str:
        return next(name for name in NODES if name != node)

    def sql_role(self, node: str) -> str:
        """primary, standby or down, as the node's PostgreSQL itself says."""
        try:
            in_recovery = pg.query_one(self.endpoint(node), self.creds, "SELECT pg_is_in_recovery()",
                                       role="superuser", dbname="postgres")
        except Exception:
            return "down"
        return "standby" if in_recovery else "primary"

    def replication(self, leader: str) -> dict[str, tuple[str, str]]:
        """{standby: (state, sync_state)} from the leader's pg_stat_replication."""
        with pg.connect(self.endpoint(leader), self.creds, role="superuser", dbname="postgres") as conn:
            rows = conn.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()
        return {name: (state, sync_state) for name, state, sync_state in rows}

    def healthy(self, synchronous: bool | None = None) -> bool:
        """One leader that is a primary, the other node streaming from it; if ``synchronous`` is
        given, a sync standby or not, both in PostgreSQL and in etcd's sync key (Patroni only
        fails over to the standby that key names)."""
        members = self.members()
        leader = next((name for name, member in members.items() if member.get("role") == "leader"), None)
        if leader is None or self.sql_role(leader) != "primary":
            return False
        standby = self.other(leader)
        if self.sql_role(standby) != "standby":
            return False
        state = self.replication(leader).get(standby)
        if state is None or state[0] != "streaming":
            return False
        if synchronous is None:
            return True
        sync_in_etcd = members.get(standby, {}).get("role") == "sync_standby"
        return (state[1] == "sync") == synchronous and sync_in_etcd == synchronous

    def wait_replication(self, synchronous: bool | None = None, timeout: float = 60) -> str:
        """Wait until healthy(); returns the leader."""
        with phase("replication wait"):
            wait_until(lambda: self.healthy(synchronous), service=SCOPE,
                       expected=("a leader and a standby streaming from it"
                                 + ("" if synchronous is None else f" ({'sync' if synchronous else 'async'})")),
                       timeout=timeout, interval=0.2, log=self.diagnostics())
        return self.leader()

    def wait_new_leader(self, old: str, timeout: float) -> str:
        """Wait until another node than ``old`` leads and its PostgreSQL is a primary; returns it."""
        new = self.other(old)
        with phase("election"):
            wait_until(lambda: self.leader() == new and self.sql_role(new) == "primary", service=new,
                       expected=f"to be elected leader and promoted in place of {old}", timeout=timeout,
                       interval=0.1, log=self.log_path(new))
        return new

    def wait_rejoined(self, node: str, timeout: float = 60) -> None:
        """Wait until ``node`` is a standby streaming from the current leader and replaying its writes.

        Streaming alone is not enough: an old primary that wrote past the fork of the new
        timeline still streams (a walreceiver starts at its segment's beginning, before the
        fork) but replays nothing, until Patroni's own check finds it diverged, stops it and
        runs pg_rewind. So it has rejoined once a row committed on the leader is visible on it."""
        markers: dict[str, str] = {}   # leader -> the token committed there

        def rejoined() -> bool:
            leader = self.leader()
            if leader is None or leader == node or self.sql_role(node) != "standby":
                return False
            state = self.replication(leader).get(node)
            if state is None or state[0] != "streaming":
                return False
            if leader not in markers:
                markers[leader] = pg.commit_marker(self.endpoint(leader), self.creds)
            return pg.has_marker(self.endpoint(node), self.creds, markers[leader])
        with phase("rejoin"):
            wait_until(rejoined, service=node,
                       expected="to rejoin as a standby that replays the new leader's writes",
                       timeout=timeout, interval=0.2, log=self.log_path(node))

    def node_behind_haproxy(self, read: bool = False) -> str | None:
        """Which node a new connection through HAProxy's write (or read) frontend reaches, as
        the node itself says (the per-node setting: cluster_name is Patroni's scope here)."""
        endpoint = self.endpoint(REPLICA if read else HAPROXY)
        return pg.query_one(endpoint, self.creds, f"SELECT current_setting('{NODE_NAME_SETTING}')")

    # -- Patroni's own controls --------------------------------------------------------------------
    def patronictl(self, *args: str, timeout: float = 60) -> str:
        """Run patronictl against this cluster."""
        done = self._run_patronictl(list(args), timeout)
        if done.returncode != 0:
            raise LabError("patroni", f"patronictl {' '.join(args)} to succeed", self.diagnostics(),
                           f"it exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
        return done.stdout

    def switchover(self, leader: str, candidate: str) -> str:
        """A planned switchover, as an operator types it."""
        return self.patronictl("switchover", "--leader", leader, "--candidate", candidate, "--force", SCOPE)

    def dynamic_config(self) -> dict:
        for node in NODES:
            if self.rest_may_answer(node):
                try:
                    return self.rest_get(node, "/config", timeout=2).json()
                except Exception:
                    continue
        raise LabError(SCOPE, "a Patroni REST API to answer GET /config", self.diagnostics(), "none answered")

    def set_synchronous_mode(self, on: bool) -> None:
        """Patroni's synchronous_mode, in its dynamic configuration (etcd): no restart needed."""
        self._set_modes(synchronous_mode=on)

    def set_failsafe_mode(self, on: bool) -> None:
        """Patroni's failsafe_mode (3.0+): a leader that loses etcd stays primary as long as it
        reaches every member's REST API. Returns once every node has the mode in its view
        (_set_modes) and the leader has written the member list it needs to the failsafe key
        in etcd (its next loop), or once that key is gone."""
        self._set_modes(failsafe_mode=on)
        wait_until(lambda: self.failsafe_key_present() == on, service=SCOPE,
                   expected=f"the failsafe key {'written' if on else 'removed'} in etcd by the leader",
                   timeout=3 * self.timings.loop_wait + 10, interval=0.2, log=self.diagnostics())

    def failsafe_key_present(self) -> bool:
        response = requests.get(f"http://{self.endpoint(ETCD)}/v2/keys/service/{SCOPE}/failsafe", timeout=2)
        return response.status_code == 200

    def _set_modes(self, **modes: bool) -> None:
        """Switches of Patroni's dynamic configuration, those that differ in one PATCH; returns
        once every node's Patroni has them in its own view of the cluster.

        etcd holding them is not enough: each node acts on the view its last loop loaded. A
        member answers the leader's POST /failsafe from that view, and one that had not
        reloaded it when etcd went away refused (502), so the leader demoted itself though
        failsafe_mode was on in etcd (a ``make test`` with loop_wait 1: the outage began
        within a second of the change)."""
        current = self.dynamic_config()
        changes = {name: on for name, on in modes.items() if bool(current.get(name, False)) != on}
        if not changes:
            return
        self._patch_config(changes)
        for node in NODES:
            # GET /config answers from the view the node's last loop loaded from etcd.
            wait_until(lambda: all(bool(self.rest_get(node, "/config").json().get(name, False)) == on
                                   for name, on in changes.items()),
                       service=node, expected=f"its Patroni to see {changes}",
                       timeout=3 * self.timings.loop_wait + 10, interval=0.2, log=self.log_path(node))

    def _patch_config(self, changes: dict[str, bool]) -> None:
        for node in NODES:
            if self.rest_may_answer(node):
                try:
                    response = requests.patch(f"http://{self.rest_endpoint(node)}/config", json=changes, timeout=5)
                except requests.RequestException:
                    continue
                if response.ok:
                    return
        raise LabError(SCOPE, f"PATCH /config to set {changes}", self.diagnostics(), "no node accepted it")

    # -- HAProxy ----------------------------------------------------------------------------------
    def haproxy_servers_up(self, backend: str = WRITE_BACKEND) -> set[str]:
        """The servers of one HAProxy backend that would get new connections now."""
        text = self.haproxy_command("show stat").lstrip("# ")
        return {row["svname"] for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
                and row["status"].startswith("UP")}

    def wait_haproxy_settled(self, timeout: float = 20) -> None:
        """Writes go to the leader only, reads to the other node only."""
        leader = self.leader()
        if leader is None:
            raise LabError(SCOPE, "a leader before HAProxy can settle", self.diagnostics(), "there is none")
        expected = {WRITE_BACKEND: {leader}, READ_BACKEND: {self.other(leader)}}
        wait_until(lambda: all(self.haproxy_servers_up(backend) == nodes for backend, nodes in expected.items()),
                   service=HAPROXY, expected=f"its backends to be UP for exactly {expected}", timeout=timeout,
                   log=self.log_path(HAPROXY))

    # -- baseline ---------------------------------------------------------------------------------
    @phase("baseline")
    def restore_baseline(self, *, synchronous: bool = False) -> str:
        """Everything running, a leader (whichever) and a streaming standby, HAProxy agreeing,
        ``synchronous_mode`` as asked, no data, Redis empty. Returns the leader.

        Cheap when the previous scenario left things healthy; a standby that cannot
        rejoin by itself (pg_rewind impossible) is rebuilt with ``patronictl reinit``.
        """
        self.heal_network()
        self._ensure_running()
        wait_until(lambda: self.leader() is not None, service=SCOPE, expected="a leader", timeout=60,
                   interval=0.2, log=self.diagnostics())
        self._set_modes(synchronous_mode=synchronous, failsafe_mode=False)
        try:
            leader = self.wait_replication(synchronous, timeout=60)
        except LabError:
            leader = self.leader()
            if leader is None:
                raise
            self.patronictl("reinit", "--force", SCOPE, self.other(leader), timeout=120)
            leader = self.wait_replication(synchronous, timeout=90)
        self.wait_haproxy_settled()
        self.redis().flushall()
        lsn = pg.reset_data(self.endpoint(leader), self.creds)
        standby = self.endpoint(self.other(leader))
        wait_until(lambda: pg.replayed(standby, self.creds, lsn), service=self.other(leader),
                   expected=f"to replay the WAL up to {lsn}", timeout=20, log=self.log_path(self.other(leader)))
        return leader

    # -- facts for the report -----------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        versions = {"etcd": requests.get(f"http://{self.endpoint(ETCD)}/version", timeout=2).json()
                    .get("etcdserver", "")}
        versions["patroni"] = self.patroni_version()
        leader = self.leader()
        if leader:
            versions["postgresql"] = pg.query_one(self.endpoint(leader), self.creds, "SHOW server_version")
        for line in self.haproxy_command("show info").splitlines():
            if line.startswith("Version:"):
                versions["haproxy"] = line.split(":", 1)[1].strip()
        return versions
