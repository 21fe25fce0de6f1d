"""The local backend: the brief's stack as real servers, no Docker: each in a network namespace
of its own where the machine allows it (root; chaoslab.local.netns), so that partitions drop
packets between two of them; else, and by hand (`python -m chaoslab up`), on 127.0.0.1."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .. import haproxy_config
from ..cluster import Cluster
from ..credentials import from_environment
from ..errors import LabError
from ..network import LINKS
from ..rundir import MACHINE_DIR, RunDir, reap_abandoned_runs
from ..topology import (BRIEF_HAPROXY_READ_PORT, BRIEF_PORTS, DB_NODES, HAPROXY, PRIMARY, REDIS, REPLICA,
                        Credentials, Endpoint)
from .faultproxy import FaultProxyNode
from .haproxy import HAProxyNode
from .netns import NamespacePartitions, NodeNetwork, unavailable_reason
from .postgres import PostgresNode, find_bindir
from .process import ServerUser
from .redis import RedisNode
from .sentinel import LocalRedisHA

LOCALHOST = "127.0.0.1"


class LocalCluster(Cluster):
    """Real PostgreSQL, Redis and HAProxy processes in a per-run directory."""

    name = "local"

    # The servers that get a network namespace of their own: every one a partition may cut off.
    NAMESPACED = (PRIMARY, REPLICA, REDIS, HAPROXY)

    def __init__(self, creds: Credentials | None = None, *, brief_ports: bool = False, links: bool = True,
                 namespaces: bool | None = None) -> None:
        super().__init__(creds or from_environment())
        self.brief_ports = brief_ports
        # Whether the clients' links (chaoslab.network.LINKS) go through the fault proxy, so that
        # network faults can be injected: about 0.1 ms more per round trip on this machine.
        self.links = links
        # Whether the servers run in network namespaces (None: wherever the machine allows it).
        # By hand they do not: a student's own API expects the brief's ports on 127.0.0.1.
        self.namespaces = unavailable_reason() is None if namespaces is None else namespaces
        self.network: NodeNetwork | None = None
        self.run_dir: RunDir | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        reap_abandoned_runs()
        self.run_dir = run_dir = RunDir.create()
        try:
            if self.namespaces:
                self.network = NodeNetwork.create(run_dir.run_id, self.NAMESPACED, MACHINE_DIR)

            def port(brief: int) -> int:
                return run_dir.reserve_port(brief if self.brief_ports else None)
            endpoints = {service: Endpoint(self._host_of(service), port(BRIEF_PORTS[service]))
                         for service in (PRIMARY, REPLICA, REDIS, HAPROXY)}
            self._build(endpoints, Endpoint(self._host_of(HAPROXY), port(BRIEF_HAPROXY_READ_PORT)),
                        Endpoint(LOCALHOST, port(None)))
            if self.network is not None:
                self.partitions = NamespacePartitions(self.network, {s: e.port for s, e in endpoints.items()},
                                                      self.log_path)
            self.faultproxy.start()
            for link in LINKS if self.links else ():   # its client reaches its service through the proxy
                self.fault_links.create(link, Endpoint(self._listener_for(link.source), port(None)),
                                        endpoints[link.target])
            self.nodes[PRIMARY].init_primary()
            self.nodes[REPLICA].clone_from(self.nodes[PRIMARY], via=self.replication_source(REPLICA, PRIMARY))
            self.nodes[REPLICA].start()
            self.redis_node.start()
            self._apply_haproxy(self.haproxy_source, "restart")
            self.wait_streaming(REPLICA)
            self.wait_haproxy_settled()
        except BaseException:
            self.close()
            raise

    def _host_of(self, service: str) -> str:
        return self.network.address(service) if self.network is not None else LOCALHOST

    def _listener_for(self, source: str) -> str:
        """Where a link listens for ``source``: the host's leg on the servers' bridge for a
        namespaced server (the host's 127.0.0.1 is not its own), else 127.0.0.1."""
        if self.network is not None and source in self.network.servers:
            return self.network.gateway
        return LOCALHOST

    def _namespace(self, service: str) -> list[str] | None:
        return self.network.enter(service) if self.network is not None else None

    def _build(self, endpoints: dict[str, Endpoint], haproxy_read: Endpoint, faultproxy: Endpoint,
               links: dict[str, Endpoint] | None = None) -> None:
        user = ServerUser.detect()
        bindir = find_bindir()
        self._endpoints = endpoints
        self._haproxy_read = haproxy_read
        clients = str(self.network.subnet) if self.network is not None else "127.0.0.1/32"
        self.nodes = {node: PostgresNode(node, endpoints[node], self.run_dir, user, self.creds, bindir,
                                         namespace=self._namespace(node), clients=clients)
                      for node in DB_NODES}
        self.redis_node = RedisNode(REDIS, endpoints[REDIS], self.run_dir, user, namespace=self._namespace(REDIS))
        self.haproxy = HAProxyNode(HAPROXY, self.run_dir, user, namespace=self._namespace(HAPROXY))
        self.faultproxy = FaultProxyNode(faultproxy, self.run_dir)
        self.fault_links = self.faultproxy.fault_links(dict(links or {}))

    # -- a stack left running by `python -m chaoslab up` ------------------------------
    STATE_FILE = "state.json"

    def detach(self) -> None:
        """Leave the stack running after this process exits, and say how to find it again."""
        self.save_state()
        self.run_dir.mark_detached()

    def save_state(self) -> None:
        state = {
            "endpoints": {service: [e.host, e.port] for service, e in self._endpoints.items()},
            "haproxy_read": [self._haproxy_read.host, self._haproxy_read.port],
            "faultproxy": [self.faultproxy.api.host, self.faultproxy.api.port],
            "links": {name: [e.host, e.port] for name, e in self.fault_links.listen.items()},
            "creds": asdict(self.creds),
            "haproxy_config_name": self.haproxy_config_name,
            "haproxy_source": self.haproxy_source,
            "haproxy_runtime_changed": self._haproxy_runtime_changed,
        }
        path = self.run_dir.path / self.STATE_FILE
        path.touch(mode=0o600)  # it holds the run's passwords
        path.write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, run_path: Path) -> "LocalCluster":
        state = json.loads((run_path / cls.STATE_FILE).read_text())
        cluster = cls(Credentials(**state["creds"]))
        cluster.run_dir = RunDir(run_path)
        cluster._build({service: Endpoint(*address) for service, address in state["endpoints"].items()},
                       Endpoint(*state["haproxy_read"]), Endpoint(*state["faultproxy"]),
                       {name: Endpoint(*address) for name, address in state["links"].items()})
        cluster.haproxy_config_name = state["haproxy_config_name"]
        cluster.haproxy_source = state["haproxy_source"]
        cluster._haproxy_runtime_changed = state["haproxy_runtime_changed"]
        return cluster

    def close(self) -> None:
        if self.run_dir is None:
            return
        for process in self._processes():
            try:
                process.stop(timeout=5)
            except Exception:
                pass  # whatever resists is SIGKILLed by the reaper below
        self.run_dir.remove()   # its namespaces too (rundir.reap_run)
        self.run_dir = None
        self.network = None

    def _processes(self):
        if hasattr(self, "nodes"):  # absent if the start failed before anything was built
            yield from (node.process for node in self.nodes.values())
            yield self.redis_node.process
            yield self.haproxy.process
            yield self.faultproxy.process

    def _server(self, service: str):
        if service in DB_NODES:
            return self.nodes[service]
        return {REDIS: self.redis_node, HAPROXY: self.haproxy}[service]

    # -- where things are --------------------------------------------------------------
    def endpoint(self, service: str) -> Endpoint:
        return self._endpoints[service]

    def haproxy_read_endpoint(self) -> Endpoint:
        return self._haproxy_read

    def log_path(self, service: str) -> Path:
        return self._server(service).log

    def is_running(self, service: str) -> bool:
        return self._server(service).process.running()

    def is_paused(self, service: str) -> bool:
        return self._server(service).process.paused

    # -- faults ----------------------------------------------------------------------------
    def _stop(self, service: str) -> None:
        self._server(service).process.stop()

    def _kill(self, service: str) -> None:
        self._server(service).process.kill()

    def _pause(self, service: str) -> None:
        self._server(service).process.pause()

    def _resume(self, service: str) -> None:
        self._server(service).process.resume()

    def _start(self, service: str) -> None:
        self._server(service).start()

    def _promote_with_pg_ctl(self, service: str) -> None:
        self.nodes[service].promote_with_pg_ctl()

    # -- HAProxy -----------------------------------------------------------------------------
    def _apply_haproxy(self, text: str, how: str) -> None:
        addresses = haproxy_config.Addresses(
            nodes={node: self.haproxy_view_of(node) for node in DB_NODES}, write_bind=self._endpoints[HAPROXY],
            read_bind=self._haproxy_read, socket_path=self.haproxy.socket)
        self.haproxy.write_config(haproxy_config.render(text, addresses))
        if how == "reload" and self.haproxy.process.running():
            self.haproxy.reload()
        elif how in ("restart", "reload"):
            self.haproxy.process.stop()
            self.haproxy.start()
        else:
            raise ValueError(f"unknown way to apply a config: {how!r}")

    def haproxy_command(self, line: str) -> str:
        try:
            return self.haproxy.command(line)
        except OSError as exc:
            raise LabError(HAPROXY, f"its runtime API to answer {line!r}", self.haproxy.log, str(exc)) from None

    def _node_address(self, service: str) -> Endpoint:
        return self._endpoints[service]

    # -- rebuilding roles ------------------------------------------------------------------------
    def rebuild_replica(self, standby: str, primary: str) -> None:
        node = self.nodes[standby]
        node.process.stop()
        node.wipe()
        node.clone_from(self.nodes[primary], via=self.replication_source(standby, primary))
        node.start()

    def redis_ha(self) -> LocalRedisHA:
        return LocalRedisHA(self.run_dir, ServerUser.detect(), network=self.network, lab_links=self.fault_links)

    def rejoin(self, old_primary: str, new_primary: str) -> None:
        node = self.nodes[old_primary]
        if node.process.running():
            node.process.stop()
        node.rewind_from(self.nodes[new_primary], via=self.replication_source(old_primary, new_primary))
        node.start()
