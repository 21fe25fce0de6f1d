"""Redis high availability with Sentinel, as local processes (the brief's bonus).

One master, one replica, three Sentinels (a quorum of two), in the lab's run
directory. Which node is master moves with failovers: ask the Sentinels.

Where the lab's servers have network namespaces (chaoslab.local.netns), so do the
group's five members, on the same bridge: a Sentinel can then be cut from a Redis node
by packets dropped (chaoslab.partitions), and every address a Sentinel hands out is one
the host (the harness, the API) reaches.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass

from .. import redis_probe
from ..cluster import fault_steps
from ..network import FaultLinks
from ..redis_ha import MASTER_NAME, NODE_CONF, SENTINEL_TIMINGS, RedisHA
from ..rundir import RunDir
from ..topology import Endpoint
from .netns import NamespacePartitions, NodeNetwork
from .process import ServerProcess, ServerUser
from .redis import RedisNode

SENTINEL_CONF = """\
# Written by chaoslab. Sentinel rewrites this file as it learns the group.
bind {host}
port {port}
dir {dir}
sentinel monitor {master} {master_host} {master_port} 2
sentinel down-after-milliseconds {master} {down_after_ms}
sentinel failover-timeout {master} {failover_timeout_ms}
sentinel parallel-syncs {master} 1
"""


@dataclass
class SentinelNode:
    name: str
    endpoint: Endpoint
    run_dir: RunDir
    user: ServerUser
    master: Endpoint
    namespace: list[str] | None = None   # nsenter's arguments (chaoslab.local.netns), if any

    def __post_init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.dir = self.run_dir.service_dir(self.name)
        self.log = self.dir / "sentinel.log"
        self.log.touch()
        conf = self.dir / "sentinel.conf"
        if not conf.exists():
            conf.write_text(SENTINEL_CONF.format(host=self.endpoint.host, port=self.endpoint.port, dir=self.dir,
                                                 master=MASTER_NAME, master_host=self.master.host,
                                                 master_port=self.master.port, **SENTINEL_TIMINGS))
        self.user.own(self.dir)
        self.process = ServerProcess(name=self.name, args=[binary, str(conf), "--sentinel"], cwd=self.dir,
                                     log=self.log, user=self.user, run_dir=self.run_dir,
                                     stop_signal=signal.SIGTERM, namespace=self.namespace)

    def start(self, timeout: float = 15) -> None:
        self.process.start()
        self.process.wait_answering(lambda: redis_probe.ping(self.endpoint), expected=f"PONG on {self.endpoint}",
                                    timeout=timeout)


SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
SERVERS = ("redis-ha-1", "redis-ha-2", *SENTINELS)


class LocalRedisHA(RedisHA):
    """The Sentinel group on real processes, in the cluster's run directory."""

    def __init__(self, run_dir: RunDir, user: ServerUser, ports: dict[str, int] | None = None,
                 network: NodeNetwork | None = None, lab_links: FaultLinks | None = None) -> None:
        """``ports``: each server's port, for a group found again in a running lab; else reserved now.
        ``network``: the lab's namespaces, which the group joins; None: everything on 127.0.0.1.
        ``lab_links``: the lab's fault proxy, which then serves the Sentinels' links (with ``network``)."""
        self.run_dir = run_dir
        self.lab_links = lab_links if network is not None else None
        self.ports = dict(ports) if ports else {name: run_dir.reserve_port() for name in SERVERS}
        if network is not None:
            network.add(SERVERS)
        self.network = network

        def endpoint(name: str) -> Endpoint:
            return Endpoint(network.address(name) if network else "127.0.0.1", self.ports[name])

        def namespace(name: str) -> list[str] | None:
            return network.enter(name) if network else None
        master = endpoint("redis-ha-1")
        self.nodes = {
            "redis-ha-1": RedisNode("redis-ha-1", master, run_dir, user, extra_conf=NODE_CONF,
                                    namespace=namespace("redis-ha-1")),
            "redis-ha-2": RedisNode("redis-ha-2", endpoint("redis-ha-2"), run_dir, user,
                                    extra_conf=f"{NODE_CONF}replicaof {master.host} {master.port}\n",
                                    namespace=namespace("redis-ha-2")),
        }
        self.sentinels = {name: SentinelNode(name, endpoint(name), run_dir, user, master, namespace(name))
                          for name in SENTINELS}
        if network is not None:
            self.partitions = NamespacePartitions(network, self.ports, self.log_path)

    def _server(self, name: str):
        return self.nodes.get(name) or self.sentinels[name]

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        for sentinel in self.sentinels.values():
            sentinel.start()
        self.wait_settled()
        if self.lab_links is not None:
            # The proxy runs on the host: a Sentinel reaches it on the host's leg on the bridge.
            self.serve_sentinel_links(
                self.lab_links,
                {link: Endpoint(self.network.gateway, self.run_dir.reserve_port()) for link in self.sentinel_links()},
                {name: node.endpoint for name, node in self.nodes.items()})

    def close(self) -> None:
        for server in [*self.sentinels.values(), *self.nodes.values()]:
            server.process.stop(timeout=5)
        self.release_sentinel_links()

    def sentinel_endpoints(self) -> list[Endpoint]:
        return [sentinel.endpoint for sentinel in self.sentinels.values()]

    def node_endpoint(self, name: str) -> Endpoint:
        return self.nodes[name].endpoint

    def log_path(self, name: str):
        return self._server(name).log

    def fault(self, action: str, name: str) -> None:
        server = self._server(name)
        process = server.process
        for step in fault_steps(action, stop=process.stop, kill=process.kill, pause=process.pause,
                                resume=process.resume, start=server.start):
            step()

    def is_running(self, name: str) -> bool:
        return self._server(name).process.running()

    def is_paused(self, name: str) -> bool:
        return self._server(name).process.paused
