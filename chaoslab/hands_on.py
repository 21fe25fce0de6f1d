"""The lab that `python -m chaoslab up` leaves running, on each topology: what it runs, how a
student reaches it, and what `fault`, `promote` and `switch` do there.

    brief     the brief's stack: two PostgreSQL nodes, HAProxy, Redis
    sentinel  the same, plus the Sentinel bonus: two Redis nodes and three Sentinels, and
              an API that asks the Sentinels where the Redis master is
    patroni   the Patroni bonus: etcd, two nodes run by Patroni, HAProxy asking Patroni
              who leads, Redis

Each lab lives in one run directory (its API too), so `down` and the reaper remove it
whatever its topology. The command line (``__main__``) never branches on the topology:
what differs is here.
"""

from __future__ import annotations

import abc
import json
import shlex
from pathlib import Path

from .cluster import FAULTS, fault_steps
from .errors import LabError
from .local.cluster import LocalCluster
from .local.patroni import PatroniCluster
from .local.process import ServerUser
from .local.sentinel import LocalRedisHA
from .network import HEAL, NETWORK_FAULTS, parameters_for
from .patroni.config import ETCD, NODES, SCOPE
from .redis_ha import MASTER_NAME
from .topology import API, HAPROXY, PRIMARY, REDIS, REPLICA, SERVICES, Credentials, Endpoint
from .waits import wait_until

TOPOLOGY_FILE = "topology"   # in the run directory: which class attaches to it
SENTINEL_PORTS_FILE = "sentinel-ports.json"
DEFAULT_TOPOLOGY = "brief"


def _psql(endpoint: Endpoint, creds: Credentials) -> str:
    return (f"PGPASSWORD={shlex.quote(creds.app_password)} psql -h {endpoint.host} -p {endpoint.port} "
            f"-U {creds.app_user} -d {creds.database}")


class HandsOnLab(abc.ABC):
    """One topology's lab as `up` leaves it. ``cluster`` is what the harness drives (the API,
    `load`, `watch` and `demo` use it as the scenarios do)."""

    topology: str
    has_brief_nodes = True   # db-primary and db-replica, which `watch` and `demo` name

    def __init__(self, cluster) -> None:
        self.cluster = cluster

    @property
    def run_dir(self):
        return self.cluster.run_dir

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def start(cls, *, config: str) -> "HandsOnLab":
        """Start it on the brief's ports when free; nothing is left running if that fails."""

    @classmethod
    @abc.abstractmethod
    def attach(cls, run_path: Path) -> "HandsOnLab": ...

    def detach(self) -> None:
        (self.run_dir.path / TOPOLOGY_FILE).write_text(self.topology)
        self.cluster.detach()

    def close(self) -> None:
        self.cluster.close()

    def save_state(self) -> None:
        self.cluster.save_state()

    def api_settings(self) -> dict[str, str]:
        """What the lab's API needs beyond the cluster's endpoints."""
        return {}

    # -- what a student sees --------------------------------------------------------------------
    @abc.abstractmethod
    def services(self) -> tuple[str, ...]:
        """What `fault` can target (the API aside)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, dict]:
        """Each service: endpoint, running, paused, log."""

    @abc.abstractmethod
    def headline(self) -> str:
        """What the status line says beside the run: the HAProxy config, who leads."""

    @abc.abstractmethod
    def connection_lines(self) -> list[str]:
        """Lines that work as pasted into a shell."""

    def brief_cluster(self, command: str):
        """The cluster, for a command that names the brief's two nodes (`watch`, `demo`)."""
        if not self.has_brief_nodes:
            raise LabError(self.topology, f"a lab with the brief's {PRIMARY} and {REPLICA} for `{command}`",
                           cause=f"this one runs the {self.topology} topology: `python -m chaoslab status` "
                                 "shows its roles, and `python -m chaoslab load` its behaviour under a failover")
        return self.cluster

    # -- what a student does --------------------------------------------------------------------
    def check_service(self, service: str) -> None:
        if service not in self.services():
            raise LabError(service, f"a service of the {self.topology} topology ({', '.join(self.services())})",
                           cause=f"this lab has no {service!r}: see `python -m chaoslab status`")

    def fault(self, action: str, service: str, **parameters: int) -> None:
        """Refused before anything is touched: a service the lab lacks, an unknown action, a
        network fault where the lab has no links, or bad parameters."""
        self.check_service(service)
        if action in NETWORK_FAULTS or action == HEAL:
            self.network_faults_here()
            self.cluster.fault_network(action, service, **parameters_for(action, parameters))
            return
        if action not in FAULTS:
            raise ValueError(f"unknown fault {action!r}; known: {', '.join(FAULTS)}")
        self._fault(action, service)

    def partition(self, one: str, other: str) -> None:
        """The two services cut from each other both ways (chaoslab.network.LinkFaults.partition)."""
        for service in (one, other):
            if service != API:
                self.check_service(service)
        self.network_faults_here()
        self.cluster.partition(one, other)

    # Whether the topology's API reaches its services through the fault proxy's links.
    has_links = False

    def network_faults_here(self):
        if not self.has_links:
            raise LabError(self.topology, "a lab whose links go through the fault proxy for a network fault",
                           cause=f"the {self.topology} topology has none yet: the brief's stack (`python -m "
                                 "chaoslab up`) and the patroni one have")
        return self.cluster.require_fault_links()

    @abc.abstractmethod
    def _fault(self, action: str, service: str) -> None: ...

    def leads(self, service: str) -> bool:
        """Whether ``service`` is a primary whose name does not say so (Patroni's leader): a
        fault on it is a failover that `load` measures. The brief's primary is db-primary."""
        return False

    @abc.abstractmethod
    def promote(self, service: str, method: str | None) -> None: ...

    @abc.abstractmethod
    def switch(self, service: str, method: str | None) -> None: ...


class BriefLab(HandsOnLab):
    topology = "brief"
    has_links = True

    @classmethod
    def start(cls, *, config: str) -> "BriefLab":
        cluster = LocalCluster(brief_ports=True, namespaces=False)   # the brief's ports on 127.0.0.1
        cluster.start()
        try:
            if config != "brief":
                cluster.use_haproxy_config(config)
        except BaseException:
            cluster.close()
            raise
        return cls(cluster)

    @classmethod
    def attach(cls, run_path: Path) -> "BriefLab":
        return cls(LocalCluster.attach(run_path))

    def services(self) -> tuple[str, ...]:
        return SERVICES

    def describe(self) -> dict[str, dict]:
        return self.cluster.describe()

    def headline(self) -> str:
        return f"HAProxy config: {self.cluster.haproxy_config_name}"

    def connection_lines(self) -> list[str]:
        cluster, creds = self.cluster, self.cluster.creds
        redis = cluster.endpoint(REDIS)
        return [
            f"{PRIMARY:<11} {_psql(cluster.endpoint(PRIMARY), creds)}",
            f"{REPLICA:<11} {_psql(cluster.endpoint(REPLICA), creds)}",
            f"{HAPROXY:<11} {_psql(cluster.endpoint(HAPROXY), creds)}   "
            f"(writes; role-aware reads on port {cluster.haproxy_read_endpoint().port})",
            f"{REDIS:<11} redis-cli -h {redis.host} -p {redis.port}",
            f"{'stats':<11} echo 'show stat' | socat stdio {cluster.haproxy.socket}",
        ]

    def _fault(self, action: str, service: str) -> None:
        self.cluster.fault(action, service)

    def promote(self, service: str, method: str | None) -> None:
        self.cluster.promote(service, method=method or "pg_ctl")

    def switch(self, service: str, method: str | None) -> None:
        self.cluster.switch_writes(service, method or "restart")


class SentinelLab(BriefLab):
    """The brief's stack and the Sentinel group in one run directory; the API's cache is the
    group's master, found through the Sentinels, while the brief's Redis stays as it is."""

    has_links = False   # the API finds its Redis through the Sentinels, not through a link

    topology = "sentinel"

    def __init__(self, cluster: LocalCluster, group: LocalRedisHA) -> None:
        super().__init__(cluster)
        self.group = group

    @classmethod
    def start(cls, *, config: str) -> "SentinelLab":
        brief = BriefLab.start(config=config)
        try:
            group = brief.cluster.redis_ha()
            group.start()
        except BaseException:
            brief.close()
            raise
        return cls(brief.cluster, group)

    @classmethod
    def attach(cls, run_path: Path) -> "SentinelLab":
        cluster = LocalCluster.attach(run_path)
        ports = json.loads((run_path / SENTINEL_PORTS_FILE).read_text())
        return cls(cluster, LocalRedisHA(cluster.run_dir, ServerUser.detect(), ports))

    def detach(self) -> None:
        (self.run_dir.path / SENTINEL_PORTS_FILE).write_text(json.dumps(self.group.ports))
        super().detach()

    def api_settings(self) -> dict[str, str]:
        return {"REDIS_SENTINELS": self.group.sentinel_setting(), "REDIS_SENTINEL_MASTER": MASTER_NAME}

    def services(self) -> tuple[str, ...]:
        return SERVICES + tuple(self.group.nodes) + tuple(self.group.sentinels)

    def describe(self) -> dict[str, dict]:
        described = super().describe()
        for name, server in {**self.group.nodes, **self.group.sentinels}.items():
            endpoint = server.endpoint
            described[name] = {"endpoint": str(endpoint), "running": self.group.is_running(name),
                               "paused": self.group.is_paused(name), "log": str(server.log)}
        return described

    def headline(self) -> str:
        return f"{super().headline()}, Redis master (Sentinels): {self._sentinels_master()}"

    def _sentinels_master(self) -> str:
        """The master the Sentinels agree on; else what each one says, since right after a
        failover they learn the new master from each other's hello messages, not all at once."""
        answers = self.group.master_per_sentinel()
        named = set(answers.values())
        if named == {None}:
            return "unknown (no Sentinel answers)"
        if len(named) > 1:
            said = ", ".join(f"{sentinel}: {master or 'no answer'}" for sentinel, master in answers.items())
            return f"not agreed ({said})"
        (master,) = named
        role = self.group.role(master)
        return master if role == "master" else f"{master}, which says it is {role or 'unreachable'}"

    def connection_lines(self) -> list[str]:
        sentinel = next(iter(self.group.sentinels.values())).endpoint
        lines = super().connection_lines()
        lines.append(f"{'sentinel':<11} redis-cli -h {sentinel.host} -p {sentinel.port} "
                     f"sentinel get-master-addr-by-name {MASTER_NAME}")
        lines += [f"{name:<11} redis-cli -h {node.endpoint.host} -p {node.endpoint.port} info replication"
                  for name, node in self.group.nodes.items()]
        return lines

    def _fault(self, action: str, service: str) -> None:
        if service in SERVICES:
            super()._fault(action, service)
        else:
            self.group.fault(action, service)


class PatroniLab(HandsOnLab):
    """Patroni promotes and HAProxy follows by itself: `promote` asks Patroni for a switchover
    (or a failover when the leader is down), and `switch` only waits for HAProxy to agree."""

    topology = "patroni"
    has_brief_nodes = False   # pg-1 and pg-2, whose roles move
    has_links = True          # each node's link to etcd (chaoslab.patroni.config.LINKS)
    FOLLOW_DEADLINE_S = 15

    @classmethod
    def start(cls, *, config: str) -> "PatroniLab":
        if config != "brief":
            raise ValueError("--config is the brief topology's HAProxy choice; the patroni topology has its own "
                             "(haproxy/haproxy-patroni.cfg)")
        cluster = PatroniCluster(brief_ports=True, namespaces=False)   # the brief's ports on 127.0.0.1
        cluster.start()
        return cls(cluster)

    @classmethod
    def attach(cls, run_path: Path) -> "PatroniLab":
        return cls(PatroniCluster.attach(run_path))

    def services(self) -> tuple[str, ...]:
        return self.cluster.services()

    def describe(self) -> dict[str, dict]:
        return self.cluster.describe()

    def headline(self) -> str:
        try:
            leader = self.cluster.leader() or "none"
        except Exception:
            leader = "unknown (etcd does not answer)"
        return f"Patroni leader: {leader}"

    def connection_lines(self) -> list[str]:
        cluster, creds = self.cluster, self.cluster.creds
        config = cluster.nodes[NODES[0]].config_path
        redis = cluster.endpoint(REDIS)
        lines = [f"{'patroni':<11} patronictl -c {config} list {SCOPE}"]
        lines += [f"{node:<11} {_psql(cluster.endpoint(node), creds)}" for node in NODES]
        lines += [
            f"{HAPROXY:<11} {_psql(cluster.endpoint(HAPROXY), creds)}   "
            f"(writes; reads on port {cluster.endpoint(REPLICA).port})",
            f"{REDIS:<11} redis-cli -h {redis.host} -p {redis.port}",
            f"{ETCD:<11} curl -s http://{cluster.endpoint(ETCD)}/v2/keys/service/{SCOPE}/leader",
            f"{'stats':<11} echo 'show stat' | socat stdio {cluster.haproxy.socket}",
        ]
        return lines

    def _fault(self, action: str, service: str) -> None:
        cluster = self.cluster
        node = cluster.nodes.get(service)
        if node is not None:   # Patroni and its PostgreSQL together
            steps = fault_steps(action, stop=node.stop, kill=node.kill, pause=node.pause, resume=node.resume,
                                start=node.start)
        else:
            server = {ETCD: cluster.etcd, HAPROXY: cluster.haproxy, REDIS: cluster.redis_node}[service]
            process = server.process
            steps = fault_steps(action, stop=process.stop, kill=process.kill, pause=process.pause,
                                resume=process.resume, start=server.start)
        for step in steps:
            step()

    def leads(self, service: str) -> bool:
        try:
            return service == self.cluster.leader()
        except Exception:   # nobody answers for the cluster: no leader to lose
            return False

    def _node(self, service: str) -> str:
        if service not in NODES:
            raise LabError(service, f"a database node of the patroni topology ({', '.join(NODES)})",
                           cause=f"{service!r} is not one: see `python -m chaoslab status`")
        return service

    def promote(self, service: str, method: str | None) -> None:
        candidate = self._node(service)
        if method is not None:
            raise ValueError("Patroni promotes by itself: `promote NODE` asks it to, with no --method")
        leader = self.cluster.leader()
        if leader == candidate:
            raise LabError(candidate, "a standby to promote", cause="it already leads: see `patronictl list`")
        if leader is not None and self.cluster.rest_may_answer(leader):
            self.cluster.switchover(leader, candidate)
        else:   # no leader to hand over: Patroni calls that a failover
            self.cluster.patronictl("failover", "--candidate", candidate, "--force", SCOPE)
        self.cluster.wait_new_leader(self.cluster.other(candidate), timeout=60)

    def switch(self, service: str, method: str | None) -> None:
        node = self._node(service)
        if method is not None:
            raise ValueError("HAProxy follows Patroni's REST API by itself: `switch NODE` only waits for it, "
                             "with no --method")
        leader = self.cluster.leader()
        if leader != node:
            raise LabError(node, "Patroni's leader, for HAProxy to send it the writes",
                           cause=f"the leader is {leader or 'nobody'}: run `python -m chaoslab promote {node}` first")
        wait_until(lambda: self.cluster.node_behind_haproxy() == node, service=HAPROXY,
                   expected=f"to send the writes to {node}, as Patroni's /primary says",
                   timeout=self.FOLLOW_DEADLINE_S, log=self.cluster.log_path(HAPROXY))


TOPOLOGIES: dict[str, type[HandsOnLab]] = {lab.topology: lab for lab in (BriefLab, SentinelLab, PatroniLab)}


def attach(run_path: Path) -> HandsOnLab:
    """The lab `up` left in this run directory, on its topology."""
    try:
        topology = (run_path / TOPOLOGY_FILE).read_text().strip()
    except FileNotFoundError:
        topology = DEFAULT_TOPOLOGY
    return TOPOLOGIES[topology].attach(run_path)

