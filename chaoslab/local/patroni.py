"""The Patroni topology on the local backend: etcd, two PostgreSQL nodes run by Patroni, HAProxy, Redis.

The same lab as the brief's, except that nobody promotes or switches by hand:
Patroni elects the primary through a leader key in etcd, and HAProxy asks each
node's Patroni REST API who it is (haproxy/haproxy-patroni.cfg). The API under
test is unchanged: its write DSN is HAProxy's write frontend, its read DSN
HAProxy's read frontend. What does not depend on processes (roles, baseline,
switchover) is in ``base.BasePatroniCluster``, shared with the compose backend.

Every process runs in one run directory on reserved ports, as the server user
when root; all of it goes on ``close()``, and a killed run is reaped by the next.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ..credentials import from_environment
from ..errors import LabError
from ..rundir import MACHINE_DIR, RunDir, reap_abandoned_runs
from ..topology import BRIEF_HAPROXY_READ_PORT, BRIEF_PORTS, HAPROXY, REDIS, REPLICA, Credentials, Endpoint
from ..waits import wait_until
from ..patroni.base import READ_BACKEND, WRITE_BACKEND, BasePatroniCluster
from ..patroni.config import (ETCD, LAB_TIMINGS, LINKS, NODES, SCOPE, NodeAddresses, Timings, haproxy_source,
                              render_haproxy, route_checks)
from .etcd import EtcdNode
from .faultproxy import NAME as FAULTPROXY, FaultProxyNode
from .haproxy import HAProxyNode
from .netns import NamespacePartitions, NodeNetwork, unavailable_reason
from .patroni_node import PatroniNode
from .postgres import find_bindir
from .process import ServerUser
from .redis import RedisNode

__all__ = ["READ_BACKEND", "WRITE_BACKEND", "PatroniCluster", "check_programs"]

LOCALHOST = "127.0.0.1"
PATRONICTL = "patronictl"
# What this topology needs beyond the brief's stack, and the Debian package of each.
PROGRAMS = {"etcd": "etcd-server", "patroni": "patroni", PATRONICTL: "patroni"}


def check_programs() -> None:
    """Fail early, naming the packages to install, rather than halfway through a start."""
    missing = sorted({package for program, package in PROGRAMS.items() if shutil.which(program) is None})
    if missing:
        raise LabError(SCOPE, "etcd and Patroni to be installed",
                       cause=f"they are not: apt-get install -y {' '.join(missing)}")


class PatroniCluster(BasePatroniCluster):
    """Real etcd, Patroni, PostgreSQL, HAProxy and Redis processes, each in a network namespace of
    its own where the machine allows it (chaoslab.local.netns), else on 127.0.0.1."""

    name = "local-patroni"
    # The servers that get a network namespace of their own (a node: Patroni and its PostgreSQL).
    NAMESPACED = (ETCD, *NODES, REDIS, HAPROXY)

    def __init__(self, creds: Credentials | None = None, *, timings: Timings = LAB_TIMINGS,
                 brief_ports: bool = False, namespaces: bool | None = None) -> None:
        super().__init__(creds or from_environment(), timings)
        self.brief_ports = brief_ports   # HAProxy and Redis on the brief's ports when free (`up`)
        # As in the brief's local lab (chaoslab.local.cluster): by hand, everything on 127.0.0.1.
        self.namespaces = unavailable_reason() is None if namespaces is None else namespaces
        self.network: NodeNetwork | None = None
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
            if self.namespaces:
                self.network = NodeNetwork.create(run_dir.run_id, self.NAMESPACED, MACHINE_DIR)
            self._build(run_dir)
            if self.network is not None:
                ports = {ETCD: self.etcd.client.port, REDIS: self.redis_node.endpoint.port,
                         HAPROXY: self._write_bind.port, **{name: node.postgres.port for name, node in self.nodes.items()}}
                self.partitions = NamespacePartitions(self.network, ports, self.log_path)
            self.etcd.start()
            self.faultproxy.start()
            for link in LINKS:   # to etcd, or to a node's REST API
                upstream = self.etcd.client if link.target == ETCD else self.nodes[link.target].rest
                self.fault_links.create(link, self.fault_links.listen[link.name], upstream)
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

    def _build(self, run_dir: RunDir, known: dict[str, Endpoint] | None = None) -> None:
        """Every server of the run, on the ports in ``known`` (a lab found again by ``attach``)
        or on ports reserved now."""
        user = ServerUser.detect()
        bindir = find_bindir()
        self._addresses: dict[str, Endpoint] = {}

        def address(key: str, brief: int | None = None, server: str | None = None) -> Endpoint:
            """``server``: whose namespace the address is in (None: the host's 127.0.0.1)."""
            if known is not None:
                endpoint = known[key]
            else:
                host = LOCALHOST if self.network is None or server is None else self.network.address(server)
                endpoint = Endpoint(host, run_dir.reserve_port(brief if self.brief_ports else None))
            self._addresses[key] = endpoint
            return endpoint

        def listener(link) -> Endpoint:
            # A namespaced server reaches the host's fault proxy on the host's leg on the bridge.
            if known is not None or self.network is None:
                return address(f"link-{link.name}")
            return self._addresses.setdefault(f"link-{link.name}", Endpoint(
                self.network.gateway, run_dir.reserve_port(None)))

        def namespace(server: str) -> list[str] | None:
            return self.network.enter(server) if self.network is not None else None
        clients = (str(self.network.subnet),) if self.network is not None else ("127.0.0.1/32",)
        # The postgres wrapper, run as the server user, records its process group there.
        user.own(run_dir.path / "pgroups")
        self.etcd = EtcdNode(ETCD, address(ETCD, server=ETCD), address(f"{ETCD}-peer", server=ETCD), run_dir, user,
                             namespace=namespace(ETCD))
        # Each node reaches etcd through its link's fault proxy (chaoslab.network), so that a
        # scenario can cut one node, or all, from etcd.
        self.faultproxy = FaultProxyNode(address(FAULTPROXY), run_dir)
        self.fault_links = self.faultproxy.fault_links({link.name: listener(link) for link in LINKS}, links=LINKS)
        self.nodes = {name: PatroniNode(name, NodeAddresses(postgres=address(name, server=name),
                                                            rest=address(f"{name}-rest", server=name)),
                                        self.fault_links.endpoint_for(name, ETCD), run_dir, user, self.creds, bindir,
                                        self.timings, etcd_is_a_proxy=True, namespace=namespace(name),
                                        client_networks=clients)
                      for name in NODES}
        self.redis_node = RedisNode(REDIS, address(REDIS, BRIEF_PORTS[REDIS], server=REDIS), run_dir, user,
                                    namespace=namespace(REDIS))
        self.haproxy = HAProxyNode(HAPROXY, run_dir, user, namespace=namespace(HAPROXY))
        self._write_bind = address(HAPROXY, BRIEF_PORTS[HAPROXY], server=HAPROXY)
        self._read_bind = address(REPLICA, BRIEF_HAPROXY_READ_PORT, server=HAPROXY)

    # -- a stack left running by `python -m chaoslab up --topology patroni` ---------------------
    STATE_FILE = "state.json"

    def detach(self) -> None:
        """Leave the stack running after this process exits; ``attach`` finds it again."""
        path = self.run_dir.path / self.STATE_FILE
        path.touch(mode=0o600)  # it holds the run's passwords
        path.write_text(json.dumps({"addresses": {key: [e.host, e.port] for key, e in self._addresses.items()},
                                    "creds": asdict(self.creds)}, indent=2))
        self.run_dir.mark_detached()

    @classmethod
    def attach(cls, run_path: Path) -> "PatroniCluster":
        state = json.loads((run_path / cls.STATE_FILE).read_text())
        lab = cls(Credentials(**state["creds"]))
        lab.run_dir = RunDir(run_path)
        lab._build(lab.run_dir, {key: Endpoint(*address) for key, address in state["addresses"].items()})
        return lab

    def save_state(self) -> None:
        """Nothing to save after a fault: Patroni, not this process, knows the roles."""

    def haproxy_config(self) -> str:
        checks = route_checks(haproxy_source(), {name: self.fault_links.endpoint_for(HAPROXY, name) for name in NODES})
        return render_haproxy(checks, {name: node.addresses for name, node in self.nodes.items()},
                              write_bind=self._write_bind, read_bind=self._read_bind,
                              socket_path=self.haproxy.socket)

    def close(self) -> None:
        """Stop everything (the nodes side by side, etcd after them) and remove every trace of the run."""
        if self.run_dir is None:
            return
        if hasattr(self, "haproxy"):
            for step in (self.haproxy.process.stop, self.redis_node.process.stop):
                _quietly(step)
            # Each node is Patroni's own clean stop (PostgreSQL first, then its keys), up to 2 s or
            # more: the whole close took 4.4 s (6.3 s in synchronous_mode) one node after the
            # other, 2.9 s (4.2 s) side by side, at the end of every worker that ran Patroni.
            stopping = [threading.Thread(target=_quietly, args=(node.stop,), name=f"stop-{name}")
                        for name, node in self.nodes.items()]
            for thread in stopping:
                thread.start()
            for thread in stopping:
                thread.join()   # node.stop is bounded: Patroni's clean stop, then SIGKILL
            for step in (self.etcd.process.stop, self.faultproxy.process.stop):
                _quietly(step)
        self.run_dir.remove()   # its namespaces too (rundir.reap_run)
        self.run_dir = None
        self.network = None

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

    def rest_endpoint(self, node: str) -> Endpoint:
        return self.nodes[node].rest

    def log_path(self, service: str) -> Path:
        if service in self.nodes:
            return self.nodes[service].log
        if service == REPLICA:
            return self.haproxy.log
        return {ETCD: self.etcd, HAPROXY: self.haproxy, REDIS: self.redis_node}[service].log

    def rest_may_answer(self, node: str) -> bool:
        server = self.nodes[node]
        return server.process.running() and not server.paused

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

    def _run_patronictl(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        config = self.nodes[NODES[0]].config_path
        try:
            return subprocess.run([PATRONICTL, "-c", str(config), *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise LabError("patroni", "patronictl to run", cause="it is not installed (apt-get install patroni)") \
                from None
        except subprocess.TimeoutExpired:
            raise LabError("patroni", f"patronictl {' '.join(args)} to finish",
                           cause=f"it did not within {timeout:g}s") from None

    def haproxy_command(self, line: str) -> str:
        try:
            return self.haproxy.command(line)
        except OSError as exc:
            raise LabError(HAPROXY, f"its runtime API to answer {line!r}", self.haproxy.log, str(exc)) from None

    # -- baseline and facts -------------------------------------------------------------------------
    def _ensure_running(self) -> None:
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

    def patroni_version(self) -> str:
        patroni = subprocess.run(["patroni", "--version"], capture_output=True, text=True, timeout=30)
        return patroni.stdout.strip().split()[-1] if patroni.returncode == 0 else "?"

    def describe(self) -> dict[str, dict]:
        described = {}
        for service in self.services():
            server = self.nodes.get(service) or {ETCD: self.etcd, HAPROXY: self.haproxy,
                                                 REDIS: self.redis_node}[service]
            described[service] = {"endpoint": str(self.endpoint(service)), "running": server.process.running(),
                                  "paused": getattr(server, "paused", server.process.paused),
                                  "log": str(server.log)}
        return described


def _quietly(step: Callable[[], None]) -> None:
    """One step of a close: whatever resists is SIGKILLed by the run directory's reaper after it."""
    try:
        step()
    except Exception:
        pass
