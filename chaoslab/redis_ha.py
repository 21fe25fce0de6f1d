"""The Redis Sentinel group (bonus): what every backend shares.

A backend provides the processes or containers; the questions asked of the
group (who is master, is the replica linked, do the Sentinels agree) only need
connections, so they are answered here once.
"""

from __future__ import annotations

import abc
from pathlib import Path

import redis as redis_client

from . import redis_probe
from .errors import LabError
from .network import FaultLinks, Link, LinkFaults
from .partitions import Partitions
from .phases import phase
from .topology import Endpoint
from .waits import wait_until

MASTER_NAME = "lab"
# Lab timings: a dead master is noticed after 1 s (production often uses 5-30 s;
# the lab wants a failover to fit in a test), and a stuck failover is retried after 5 s.
SENTINEL_TIMINGS = {"down_after_ms": 1000, "failover_timeout_ms": 5000}
# A replica that joins or rejoins (an old master, after a failover) is synced at once: by
# default a master waits 5 s for more replicas to share one transfer, and the group has one.
NODE_CONF = "repl-diskless-sync-delay 0\n"


def _client(endpoint: Endpoint) -> redis_client.Redis:
    return redis_probe.client(endpoint)


class RedisHA(LinkFaults, abc.ABC):
    name = "redis-sentinel"
    nodes: dict
    sentinels: dict
    # Packet-level partitions between the group's members (chaoslab.partitions), where the
    # backend can make them; None where they all share 127.0.0.1 (a group started by hand).
    partitions: Partitions | None = None
    # The Sentinels' links to the Redis nodes, one per pair, served through the lab's fault
    # proxy (``serve_sentinel_links``); None where the backend cannot redirect a Sentinel.
    fault_links: FaultLinks | None = None
    no_links_reason = ("the group's members share 127.0.0.1 here: its partitions and links need them in network "
                       "namespaces (the harness's labs, as root, with iproute2, util-linux and iptables)")

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def sentinel_endpoints(self) -> list[Endpoint]: ...

    @abc.abstractmethod
    def node_endpoint(self, name: str) -> Endpoint:
        """Where the harness reaches a Redis node of the group."""

    @abc.abstractmethod
    def log_path(self, name: str) -> Path | str: ...

    @abc.abstractmethod
    def fault(self, action: str, name: str) -> None: ...

    @abc.abstractmethod
    def is_running(self, name: str) -> bool: ...

    @abc.abstractmethod
    def is_paused(self, name: str) -> bool: ...

    def node_for_address(self, host: str, port: int) -> str | None:
        """The node a Sentinel means by an address (backends that NAT override this)."""
        for name in self.nodes:
            endpoint = self.node_endpoint(name)
            if (endpoint.host, endpoint.port) == (host, int(port)):
                return name
        return None

    # -- questions ---------------------------------------------------------------
    def sentinel_setting(self) -> str:
        """The API's REDIS_SENTINELS value: host:port,host:port,..."""
        return ",".join(str(endpoint) for endpoint in self.sentinel_endpoints())

    def master_per_sentinel(self) -> dict[str, str | None]:
        answers = {}
        for name, endpoint in zip(self.sentinels, self.sentinel_endpoints()):
            try:
                host, port = _client(endpoint).sentinel_get_master_addr_by_name(MASTER_NAME)
                answers[name] = self.node_for_address(host, port)
            except Exception:
                answers[name] = None
        return answers

    def role(self, name: str) -> str | None:
        try:
            return _client(self.node_endpoint(name)).info("replication")["role"]
        except Exception:
            return None

    def master(self) -> str | None:
        """The master the Sentinels agree on and that says it is master, else None."""
        answers = set(self.master_per_sentinel().values())
        if len(answers) != 1:
            return None
        (master,) = answers
        return master if master and self.role(master) == "master" else None

    def replica_linked(self, name: str) -> bool:
        try:
            info = _client(self.node_endpoint(name)).info("replication")
        except Exception:
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def wait_settled(self, timeout: float = 30) -> str:
        """Every node up, the Sentinels agree on one master, the other node replicates it."""
        def settled() -> str | None:
            master = self.master()
            if master is None:
                return None
            others = [name for name in self.nodes if name != master]
            return master if all(self.replica_linked(name) for name in others) else None
        return wait_until(settled, service="redis-sentinel",
                          expected="the Sentinels to agree on one master with its replica linked",
                          timeout=timeout, interval=0.1)

    def master_client(self) -> redis_client.Redis:
        master = self.master()
        if master is None:
            raise RuntimeError("no agreed Redis master right now")
        return _client(self.node_endpoint(master))

    # -- network faults: chaoslab.network.LinkFaults (partition, reaches, fault_link, heal_network) --
    def endpoint(self, service: str) -> Endpoint:
        """Where the harness reaches a member: a node, or a Sentinel."""
        if service in self.nodes:
            return self.node_endpoint(service)
        return dict(zip(self.sentinels, self.sentinel_endpoints()))[service]

    def protocol(self, source: str, target: str) -> str:
        return "redis"   # Sentinels speak it too

    # -- the Sentinels' links, through the fault proxy ------------------------------------------
    def sentinel_links(self) -> tuple[Link, ...]:
        return tuple(Link(sentinel, node) for sentinel in self.sentinels for node in self.nodes)

    def serve_sentinel_links(self, lab_links: FaultLinks, listen: dict[Link, Endpoint],
                             upstream: dict[str, Endpoint]) -> None:
        """Each Sentinel's connections to each node through a proxy of their own on the lab's fault
        proxy (``listen``: where each link's proxy listens; ``upstream``: each node's address as
        the proxy reaches it), so that toxics can slow or cut what one Sentinel hears from one
        node. A Sentinel connects to the addresses it learns (the master's, the replicas' from
        its INFO), so it cannot be pointed at a proxy: a DNAT rule in its namespace sends its
        connections to a node's address there, and no other client's. Then its current
        connections are closed so that it reconnects through the proxies, which the nodes'
        own client lists must show."""
        self._require_partitions("the Sentinels' links served through the fault proxy")
        links = FaultLinks(lab_links.client, {}, lab_links.log, self.sentinel_links())
        for link in links.links:
            links.create(link, listen[link], upstream[link.target])
        self.fault_links = links
        self._route_sentinels_through_their_links()

    def _route_sentinels_through_their_links(self) -> None:
        """The redirections in place (again: a Sentinel container started anew has a new
        namespace), every Sentinel connection closed, and the Sentinels back through the links."""
        for link in self.fault_links.links:
            self.partitions.redirect(link.source, link.target, self.fault_links.listen[link.name])
        for name in self.nodes:
            client = _client(self.node_endpoint(name))
            try:
                for entry in client.client_list():
                    if entry.get("name", "").startswith("sentinel-"):
                        client.client_kill_filter(_id=entry["id"])
            finally:
                client.close()
        wait_until(lambda: not self.sentinel_links_unserved(), service="redis-sentinel",
                   expected="every Sentinel to reconnect to both nodes through its links' proxies",
                   timeout=30, interval=0.2, log=self.fault_links.log)
        self.wait_settled()

    def _require_partitions(self, expected: str) -> None:
        if self.partitions is None:
            raise LabError(self.name, expected, None, self.no_links_reason)

    def release_sentinel_links(self) -> None:
        """The group's proxies removed from the lab's fault proxy, which outlives the group (a
        proxy already gone with the lab is no error)."""
        links, self.fault_links = self.fault_links, None
        for link in links.links if links is not None else ():
            try:
                links.remove(link)
            except LabError:
                pass

    def sentinel_links_unserved(self) -> list[str]:
        """What keeps the Sentinels' links from being served, as each node's own client list says:
        Sentinel connections from a Sentinel's own address rather than the proxy's, and fewer
        Sentinel connections than two from each (a command and a pub/sub one)."""
        self._require_partitions("the Sentinels' own addresses, to tell their links from direct connections")
        own = {self.partitions.address(sentinel) for sentinel in self.sentinels}
        direct = []
        for name in self.nodes:
            client = _client(self.node_endpoint(name))
            try:
                entries = [entry for entry in client.client_list() if entry.get("name", "").startswith("sentinel-")]
            except Exception:
                entries = []
            finally:
                client.close()
            direct += [f"{name}: {entry['addr']}" for entry in entries if entry["addr"].rsplit(":", 1)[0] in own]
            if len(entries) < 2 * len(self.sentinels):
                direct.append(f"{name}: {len(entries)} Sentinel connections")
        return direct

    def require_replicas(self, name: str, count: int, max_lag_s: int) -> None:
        """``name`` refuses writes (NOREPLICAS) unless ``count`` replicas acknowledged its stream
        within ``max_lag_s`` seconds: Redis's bound on what a master cut off from the group can
        accept and then lose (min-replicas-to-write, min-replicas-max-lag)."""
        client = _client(self.node_endpoint(name))
        try:
            client.config_set("min-replicas-to-write", count)
            client.config_set("min-replicas-max-lag", max_lag_s)
        finally:
            client.close()

    @phase("baseline")
    def restore_baseline(self) -> None:
        """All processes up and running, no partition, one agreed master (whichever), no data, and
        no node refusing writes for want of replicas."""
        self.heal_network()
        for name in [*self.nodes, *self.sentinels]:
            if self.is_paused(name):
                self.fault("resume", name)
            if not self.is_running(name):
                self.fault("start", name)
        self.wait_settled()
        if self.fault_links is not None and self.sentinel_links_unserved():
            self._route_sentinels_through_their_links()
        for name in self.nodes:
            self.require_replicas(name, 0, 10)   # Redis's defaults
        self.master_client().flushall()
