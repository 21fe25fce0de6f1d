"""The Patroni topology on the local backend: etcd, two PostgreSQL nodes run by Patroni, HAProxy, Redis.

The same lab as the brief's, except that nobody promotes or switches by hand:
Patroni elects the primary through a leader key in etcd, and HAProxy asks each
node's Patroni REST API who it is (haproxy/haproxy-patroni.cfg). The API under
test is unchanged: its write DSN is HAProxy's write frontend, its read DSN
HAProxy's read frontend.

Services, by name: ``etcd``, ``pg-1``, ``pg-2`` (the nodes, named for
themselves since roles move), ``haproxy``, ``redis``; and, for the API and the
scenarios written for the brief's stack, ``db-replica`` means "a standby,
through HAProxy's /replica frontend".

Every process runs in one run directory on reserved ports, as the server user
when root; all of it goes on ``close()``, and a killed run is reaped by the next.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import redis as redis_client
import requests
from psycopg import sql

from .. import haproxy_config, pg
from ..credentials import from_environment
from ..errors import LabError
from ..local.haproxy import HAProxyNode
from ..local.postgres import find_bindir
from ..local.process import ServerUser
from ..local.redis import RedisNode
from ..rundir import RunDir, reap_abandoned_runs
from ..topology import HAPROXY, REDIS, REPLICA, Credentials, Endpoint
from ..waits import wait_until
from .config import ETCD, LAB_TIMINGS, NODE_NAME_SETTING, NODES, SCOPE, NodeAddresses, Timings, haproxy_source, \
    render_haproxy
from .etcd import EtcdNode
from .node import PatroniNode

LOCALHOST = "127.0.0.1"
WRITE_BACKEND = haproxy_config.WRITE_BACKEND   # servers UP here get writes (/primary said 200)
READ_BACKEND = haproxy_config.READ_BACKEND     # servers UP here get reads (/replica said 200)
PATRONICTL = "patronictl"
# What this topology needs beyond the brief's stack, and the Debian package of each.
PROGRAMS = {"etcd": "etcd-server", "patroni": "patroni", PATRONICTL: "patroni"}


def check_programs() -> None:
    """Fail early, naming the packages to install, rather than halfway through a start."""
    missing = sorted({package for program, package in PROGRAMS.items() if shutil.which(program) is None})
    if missing:
        raise LabError(SCOPE, "etcd and Patroni to be installed",
                       cause=f"they are not: apt-get install -y {' '.join(missing)}")


class PatroniCluster:
    """Real etcd, Patroni, PostgreSQL, HAProxy and Redis processes on 127.0.0.1."""

    name = "local-patroni"

    def __init__(self, creds: Credentials | None = None, *, timings: Timings = LAB_TIMINGS) -> None:
        self.creds = creds or from_environment()
        self.timings = timings
        self.run_dir: RunDir | None = None
        self.nodes: dict[str, PatroniNode] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """etcd, then pg-1 (it bootstraps the cluster), the application's database, pg-2 (it clones
        itself from the leader), Redis and HAProxy; returns once pg-2 streams and HAProxy agrees."""
        check_programs()
        reap_abandoned_runs()
        self.run_dir = run_dir = RunDir.create()
        try:
            self._build(run_dir)
            self.etcd.start()
            for node in self.nodes.values():
                node.write_files()
            first, second = (self.nodes[name] for name in NODES)
            first.start()
            wait_until(lambda: self.leader() == first.name and self.sql_role(first.name) == "primary",
                       service=first.name, expected="to bootstrap the cluster and lead it", timeout=90,
                       log=first.log)
            self._create_application_database(first.name)
            second.start()
            self.wait_replication(timeout=90)
            self.redis_node.start()
            self.haproxy.write_config(self.haproxy_config())
            self.haproxy.start()
            self.wait_haproxy_settled()
        except BaseException:
            self.close()
            raise

    def _build(self, run_dir: RunDir) -> None:
        user = ServerUser.detect()
        bindir = find_bindir()

        def address() -> Endpoint:
            return Endpoint(LOCALHOST, run_dir.reserve_port())
        # The postgres wrapper, run as the server user, records its process group there.
        user.own(run_dir.path / "pgroups")
        self.etcd = EtcdNode(ETCD, address(), address(), run_dir, user)
        self.nodes = {name: PatroniNode(name, NodeAddresses(postgres=address(), rest=address()), self.etcd.client,
                                        run_dir, user, self.creds, bindir, self.timings) for name in NODES}
        self.redis_node = RedisNode(REDIS, address(), run_dir, user)
        self.haproxy = HAProxyNode(HAPROXY, run_dir, user)
        self._write_bind, self._read_bind = address(), address()

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

    def haproxy_config(self) -> str:
        return render_haproxy(haproxy_source(), {name: node.addresses for name, node in self.nodes.items()},
                              write_bind=self._write_bind, read_bind=self._read_bind,
                              socket_path=self.haproxy.socket)

    def close(self) -> None:
        """Stop everything (standby before leader, etcd last) and remove every trace of the run."""
        if self.run_dir is None:
            return
        steps = []
        if hasattr(self, "haproxy"):
            steps += [self.haproxy.process.stop, self.redis_node.process.stop]
            try:
                leader = self.leader()
            except Exception:
                leader = None
            steps += [node.stop for name, node in sorted(self.nodes.items(), key=lambda item: item[0] == leader)]
            steps.append(self.etcd.process.stop)
        for step in steps:
            try:
                step()
            except Exception:
                pass  # whatever resists is SIGKILLed by the reaper below
        self.run_dir.remove()
        self.run_dir = None

    # -- where things are ---------------------------------------------------------------------------
    def endpoint(self, service: str) -> Endpoint:
        if service == HAPROXY:
            return self._write_bind
        if service == REPLICA:
            return self._read_bind
        if service == REDIS:
            return self.redis_node.endpoint
        if service == ETCD:
            return self.etcd.client
        if service in self.nodes:
            return self.nodes[service].postgres
        raise ValueError(f"unknown service {service!r}; known: {', '.join(self.services())}")

    def haproxy_read_endpoint(self) -> Endpoint:
        return self._read_bind

    def services(self) -> tuple[str, ...]:
        return (ETCD, *NODES, HAPROXY, REDIS)

    def dsn(self, service: str, role: str = "app") -> str:
        return pg.conninfo(self.endpoint(service), self.creds, role=role)

    def log_path(self, service: str) -> Path:
        if service in self.nodes:
            return self.nodes[service].log
        if service == REPLICA:
            return self.haproxy.log
        return {ETCD: self.etcd, HAPROXY: self.haproxy, REDIS: self.redis_node}[service].log

    def redis(self) -> redis_client.Redis:
        endpoint = self.endpoint(REDIS)
        return redis_client.Redis(host=endpoint.host, port=endpoint.port, socket_timeout=2,
                                  socket_connect_timeout=2, decode_responses=True)

    # -- roles ------------------------------------------------------------------------------------
    def members(self) -> dict[str, dict]:
        """{node: its entry in GET /cluster} (role leader, sync_standby or replica), as etcd says,
        asked through any Patroni that answers; empty if none does."""
        for node in self.nodes.values():
            if not node.process.running() or node.paused:
                continue
            try:
                return {member["name"]: member for member in node.rest_get("/cluster").json()["members"]}
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
        wait_until(lambda: self.healthy(synchronous), service=SCOPE,
                   expected=("a leader and a standby streaming from it"
                             + ("" if synchronous is None else f" ({'sync' if synchronous else 'async'})")),
                   timeout=timeout, interval=0.2, log=self.run_dir.path)
        return self.leader()

    def wait_new_leader(self, old: str, timeout: float) -> str:
        """Wait until another node than ``old`` leads and its PostgreSQL is a primary; returns it."""
        new = self.other(old)
        wait_until(lambda: self.leader() == new and self.sql_role(new) == "primary", service=new,
                   expected=f"to be elected leader and promoted in place of {old}", timeout=timeout,
                   interval=0.1, log=self.nodes[new].log)
        return new

    def wait_rejoined(self, node: str, timeout: float = 60) -> None:
        """Wait until ``node`` is a standby streaming from the current leader."""
        def rejoined() -> bool:
            leader = self.leader()
            if leader is None or leader == node or self.sql_role(node) != "standby":
                return False
            state = self.replication(leader).get(node)
            return state is not None and state[0] == "streaming"
        wait_until(rejoined, service=node, expected="to rejoin as a standby streaming from the new leader",
                   timeout=timeout, interval=0.2, log=self.nodes[node].log)

    def node_behind(self, service: str = HAPROXY) -> str | None:
        """Which node a new connection to ``service`` reaches, as the node itself says."""
        return pg.query_one(self.endpoint(service), self.creds, f"SELECT current_setting('{NODE_NAME_SETTING}')")

    # -- faults -----------------------------------------------------------------------------------
    def kill_postgres(self, node: str) -> None:
        self.nodes[node].kill_postgres()

    def kill_node(self, node: str) -> None:
        self.nodes[node].kill()

    def pause_node(self, node: str) -> None:
        self.nodes[node].pause()

    def resume_node(self, node: str) -> None:
        self.nodes[node].resume()

    def start_node(self, node: str) -> None:
        self.nodes[node].start()

    def patronictl(self, *args: str, timeout: float = 60) -> str:
        """Run patronictl against this cluster (through a node's config: it names etcd)."""
        config = self.nodes[NODES[0]].config_path
        try:
            done = subprocess.run([PATRONICTL, "-c", str(config), *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise LabError("patroni", "patronictl to run", cause="it is not installed (apt-get install patroni)") \
                from None
        except subprocess.TimeoutExpired:
            raise LabError("patroni", f"patronictl {' '.join(args)} to finish",
                           cause=f"it did not within {timeout:g}s") from None
        if done.returncode != 0:
            raise LabError("patroni", f"patronictl {' '.join(args)} to succeed", self.run_dir.path,
                           f"it exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")
        return done.stdout

    def switchover(self, leader: str, candidate: str) -> str:
        """A planned switchover, as an operator types it."""
        return self.patronictl("switchover", "--leader", leader, "--candidate", candidate, "--force", SCOPE)

    def dynamic_config(self) -> dict:
        for node in self.nodes.values():
            if node.process.running() and not node.paused:
                try:
                    return node.rest_get("/config", timeout=2).json()
                except Exception:
                    continue
        raise LabError(SCOPE, "a Patroni REST API to answer GET /config", self.run_dir.path, "none answered")

    def set_synchronous_mode(self, on: bool) -> None:
        """Patroni's synchronous_mode, in its dynamic configuration (etcd): no restart needed."""
        if bool(self.dynamic_config().get("synchronous_mode", False)) == on:
            return
        for node in self.nodes.values():
            if node.process.running() and not node.paused:
                response = requests.patch(f"http://{node.rest}/config", json={"synchronous_mode": on}, timeout=5)
                if response.ok:
                    return
        raise LabError(SCOPE, f"PATCH /config to set synchronous_mode={on}", self.run_dir.path, "no node accepted it")

    # -- HAProxy ----------------------------------------------------------------------------------
    def haproxy_command(self, line: str) -> str:
        try:
            return self.haproxy.command(line)
        except OSError as exc:
            raise LabError(HAPROXY, f"its runtime API to answer {line!r}", self.haproxy.log, str(exc)) from None

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
            raise LabError(SCOPE, "a leader before HAProxy can settle", self.run_dir.path, "there is none")
        expected = {WRITE_BACKEND: {leader}, READ_BACKEND: {self.other(leader)}}
        wait_until(lambda: all(self.haproxy_servers_up(backend) == nodes for backend, nodes in expected.items()),
                   service=HAPROXY, expected=f"its backends to be UP for exactly {expected}", timeout=timeout,
                   log=self.haproxy.log)

    # -- baseline ---------------------------------------------------------------------------------
    def restore_baseline(self, *, synchronous: bool = False) -> str:
        """Everything running, a leader (whichever) and a streaming standby, HAProxy agreeing,
        ``synchronous_mode`` as asked, no data, Redis empty. Returns the leader.

        Cheap when the previous scenario left things healthy; a standby that cannot
        rejoin by itself (pg_rewind impossible) is rebuilt with ``patronictl reinit``.
        """
        for server in (self.etcd, self.redis_node, self.haproxy):
            if server.process.paused:
                server.process.resume()
            if not server.process.running():
                server.start()
        for node in self.nodes.values():
            if node.paused:
                node.resume()
            if not node.process.running():
                node.start()
        wait_until(lambda: self.leader() is not None, service=SCOPE, expected="a leader", timeout=60,
                   interval=0.2, log=self.run_dir.path)
        self.set_synchronous_mode(synchronous)
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
        versions = {"etcd": self.etcd.version()}
        patroni = subprocess.run(["patroni", "--version"], capture_output=True, text=True, timeout=30)
        versions["patroni"] = patroni.stdout.strip().split()[-1] if patroni.returncode == 0 else "?"
        leader = self.leader()
        if leader:
            versions["postgresql"] = pg.query_one(self.endpoint(leader), self.creds, "SHOW server_version")
        for line in self.haproxy_command("show info").splitlines():
            if line.startswith("Version:"):
                versions["haproxy"] = line.split(":", 1)[1].strip()
        return versions

    def describe(self) -> dict[str, dict]:
        described = {}
        for service in self.services():
            server = self.nodes.get(service) or {ETCD: self.etcd, HAPROXY: self.haproxy,
                                                 REDIS: self.redis_node}[service]
            described[service] = {"endpoint": str(self.endpoint(service)), "running": server.process.running(),
                                  "paused": getattr(server, "paused", server.process.paused),
                                  "log": str(server.log)}
        return described
