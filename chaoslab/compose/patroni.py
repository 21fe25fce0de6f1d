"""The Patroni topology in containers: profile ``patroni`` of docker-compose.yml, one project per run.

etcd, two Patroni nodes (the official postgres image plus Patroni,
docker/patroni/Dockerfile), HAProxy with haproxy/haproxy-patroni.cfg and the
brief's Redis, as a compose stack of their own (compose/stack.py: the run's
files, fixed addresses, logs and clean-up), as ComposeCluster does for the
brief's stack. What only needs connections (roles, baseline, switchover) is
``BasePatroniCluster``'s, shared with the local backend.

Each node's patroni.yml is rendered here by chaoslab/patroni/config.py, as for
local processes, with the container's addresses; it lives in the node's
directory of the run, mounted at /lab/node, where the node also writes its log
(docker/patroni/entrypoint.sh), so the scenarios read the same log file as on
the local backend. Faults go through the engine: ``docker kill`` loses a node,
``docker pause`` freezes it (the cgroup freezer: Patroni and PostgreSQL at
once), and a ``docker exec`` crashes its PostgreSQL alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from .. import rundir
from ..credentials import from_environment
from ..errors import LabError
from ..patroni.base import BasePatroniCluster
from ..network import Link
from ..patroni.config import (ETCD, LAB_TIMINGS, LINKS, NODES, NodeAddresses, Timings, haproxy_source, node_config,
                              node_config_text, route_checks)
from ..topology import HAPROXY, REDIS, REPLICA, Credentials, Endpoint
from ..waits import wait_until
from . import faultproxy, haproxy
from . import project as lab_project
from .partitions import ContainerPartitions
from .probe import Probe, pong
from .stack import ComposeStack

PROFILE = "patroni"
# The harness's names for the services, and compose's.
COMPOSE_SERVICES = {ETCD: "etcd", NODES[0]: "pg-1", NODES[1]: "pg-2", HAPROXY: "haproxy-patroni", REDIS: "redis"}
PG_PORT, REST_PORT, ETCD_PORT, REDIS_PORT = 5432, 8008, 2379, 6379
# What the compose file publishes, by variable: (service, container port).
PUBLISHED = {
    "PG_1_PORT": (NODES[0], PG_PORT), "PG_1_REST_PORT": (NODES[0], REST_PORT),
    "PG_2_PORT": (NODES[1], PG_PORT), "PG_2_REST_PORT": (NODES[1], REST_PORT),
    "ETCD_PORT": (ETCD, ETCD_PORT), "REDIS_PORT": (REDIS, REDIS_PORT),
    "HAPROXY_PATRONI_PORT": (HAPROXY, haproxy.WRITE_PORT), "HAPROXY_PATRONI_READ_PORT": (HAPROXY, haproxy.READ_PORT),
}
# The API's image runs the fault proxy.
DEFAULT_IMAGES = {"PATRONI_IMAGE": "chaoslab-patroni:latest", "ETCD_IMAGE": "gcr.io/etcd-development/etcd:v3.5.17",
                  "REDIS_IMAGE": "redis:7", "HAPROXY_IMAGE": "haproxy:2.9", "API_IMAGE": "chaoslab-api:latest"}
HOW_TO_GET_IMAGES = ("Pull etcd, redis and haproxy and build the Patroni and API images (`docker compose --profile "
                     "patroni pull etcd redis haproxy-patroni; docker compose --profile patroni build pg-1; "
                     "docker compose --profile api build api`)")
# Inside a node's container (docker/patroni/entrypoint.sh and the image).
CONFIG_IN_CONTAINER = "/var/lib/postgresql/patroni.yml"
DATA_DIR = Path("/var/lib/postgresql/data/pgdata")
SOCKET_DIR = Path("/var/run/postgresql")
# Crash a node's PostgreSQL and nothing else: SIGKILL to every process whose name is
# postgres (the postmaster and each backend), in one kill, then wait until they are gone.
KILL_POSTGRES = r"""
pids=
for d in /proc/[0-9]*; do
  read -r name 2>/dev/null < "$d/comm" || continue
  [ "$name" = postgres ] && pids="$pids ${d#/proc/}"
done
[ -n "$pids" ] || { echo "no PostgreSQL process is running" >&2; exit 3; }
kill -KILL $pids 2>/dev/null
for _ in $(seq 100); do
  left=
  for p in $pids; do
    state=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1)
    case "$state" in ''|Z|X) ;; *) left="$left $p" ;; esac
  done
  [ -z "$left" ] && exit 0
  sleep 0.1
done
echo "PostgreSQL processes survived SIGKILL:$left" >&2
exit 1
"""


def node_files(name: str, *, address: str, etcd: Endpoint, creds: Credentials, timings: Timings = LAB_TIMINGS,
               etcd_is_a_proxy: bool = False) -> str:
    """A node's patroni.yml for a container: it binds every address and is reached at ``address``
    (its container's, or its service name); TCP clients of its own networks only (HAProxy, the
    other node, the host through the published ports), with a password. ``etcd``: etcd, or
    the fault proxy of the node's link to it (``etcd_is_a_proxy``)."""
    config = node_config(name, addresses=NodeAddresses(Endpoint(address, PG_PORT), Endpoint(address, REST_PORT)),
                         listen=NodeAddresses(Endpoint("0.0.0.0", PG_PORT), Endpoint("0.0.0.0", REST_PORT)),
                         etcd=etcd, data_dir=DATA_DIR, bin_dir=None, socket_dir=SOCKET_DIR,
                         creds=creds, timings=timings, client_networks=("samenet",), etcd_is_a_proxy=etcd_is_a_proxy)
    return node_config_text(config)


def write_node_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "patroni.yml"
    lab_project.write_private(path, text)   # passwords: root reads it in the container, then hands it over
    return path


class ComposePatroniCluster(BasePatroniCluster):
    """etcd, Patroni, PostgreSQL, HAProxy and Redis in containers, one compose project per run."""

    name = "compose-patroni"

    def __init__(self, creds: Credentials | None = None, *, timings: Timings = LAB_TIMINGS) -> None:
        super().__init__(creds or from_environment(), timings)
        self.stack: ComposeStack | None = None
        self._frozen: set[str] = set()   # nodes this harness paused: their REST API would only time out

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.stack = stack = ComposeStack.open(self.creds, profile=PROFILE, extra_profiles=(faultproxy.PROFILE,))
        with stack.closed_on_failure():
            self._published = {variable: stack.reserve_endpoint() for variable in PUBLISHED}
            faultproxy_api = stack.reserve_endpoint()
            stack.use_images(DEFAULT_IMAGES, HOW_TO_GET_IMAGES)
            stack.create_network()
            # Each node reaches etcd through its link's fault proxy (chaoslab.network).
            links = faultproxy.plan(stack.network, LINKS, {ETCD: ETCD_PORT, **{node: REST_PORT for node in NODES}},
                                    COMPOSE_SERVICES)
            self.nodes_dir = self.run_dir.service_dir("patroni")
            for node in NODES:
                write_node_config(self.nodes_dir / node, node_files(
                    node, address=self.address(node), etcd=links[Link(node, ETCD)][0], creds=self.creds,
                    timings=self.timings, etcd_is_a_proxy=True))
                self.log_path(node).touch()
            checks = route_checks(haproxy_source(), {node: links[Link(HAPROXY, node)][0] for node in NODES})
            stack.add_haproxy(COMPOSE_SERVICES[HAPROXY]).write_config(
                checks, {node: Endpoint(self.address(node), PG_PORT) for node in NODES})
            stack.write_files([*COMPOSE_SERVICES.values(), faultproxy.SERVICE],
                              {"ETCD_ADDRESS": self.address(ETCD), "PATRONI_NODES_DIR": str(self.nodes_dir)},
                              {**self._published, faultproxy.API_PORT_VARIABLE: faultproxy_api})

            # etcd starts with the fault proxy (one compose command: with v1, half a CPU-second each).
            self.fault_links = faultproxy.start(stack, faultproxy_api, links, LINKS,
                                                with_services=(COMPOSE_SERVICES[ETCD],))
            self._wait_ready(ETCD)
            self.partitions = ContainerPartitions(
                stack.containers, self.address, {ETCD: ETCD_PORT, **{node: PG_PORT for node in NODES},
                                                 REDIS: REDIS_PORT, HAPROXY: haproxy.WRITE_PORT},
                COMPOSE_SERVICES.__getitem__)
            first, second = NODES
            self._up(first)
            wait_until(lambda: self.leader() == first and self.sql_role(first) == "primary", service=first,
                       expected="to bootstrap the cluster and lead it", timeout=90, log=self.log_path(first))
            self._create_application_database(first)
            # Redis and HAProxy need no node to start (HAProxy's checks find the leader).
            self._up(second, REDIS, HAPROXY)
            self.wait_replication(timeout=90)
            self.wait_haproxy_settled()

    def _up(self, *services: str) -> None:
        self.stack.run("up", "-d", "--no-deps", *(COMPOSE_SERVICES[service] for service in services),
                       service=services[0], expected="`up -d` to start it", timeout=180)
        for service in services:
            self._wait_ready(service)

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.fault_links = self.partitions = None

    @property
    def run_dir(self) -> rundir.RunDir | None:
        return self.stack.run_dir if self.stack else None

    def address(self, service: str) -> str:
        """A service's fixed address on the run's network."""
        return self.stack.network.address(COMPOSE_SERVICES[service])

    # -- where things are ---------------------------------------------------------------------------------
    def endpoint(self, service: str) -> Endpoint:
        if service == HAPROXY:
            return self._published["HAPROXY_PATRONI_PORT"]
        if service == REPLICA:
            return self._published["HAPROXY_PATRONI_READ_PORT"]
        for variable, (published_service, port) in PUBLISHED.items():
            if published_service == service and port != REST_PORT:
                return self._published[variable]
        raise ValueError(f"unknown service {service!r}; known: {', '.join(self.services())}")

    def rest_endpoint(self, node: str) -> Endpoint:
        return self._published[f"PG_{NODES.index(node) + 1}_REST_PORT"]

    def log_path(self, service: str) -> Path | str:
        """A node's log file (Patroni's and PostgreSQL's, written by the node); compose's logs otherwise."""
        if service in NODES:
            return self.nodes_dir / service / "patroni.log"
        return self.stack.log_hint(COMPOSE_SERVICES.get(service, service))

    def diagnostics(self) -> str:
        return self.stack.log_hint()

    def rest_may_answer(self, node: str) -> bool:
        # A stopped container publishes no port (refused at once); a frozen one would hang.
        return node not in self._frozen

    # -- readiness ---------------------------------------------------------------------------------------
    def _wait_ready(self, service: str, timeout: float = 60) -> None:
        self.stack.wait_ready(service, self._probe(service), log=self.log_path(service), timeout=timeout,
                              compose_service=COMPOSE_SERVICES[service])

    def _probe(self, service: str) -> Probe:
        if service in NODES:   # GET /patroni answers with the node's state, whatever it is
            return Probe(lambda: isinstance(self.rest_get(service, "/patroni").json(), dict),
                         f"Patroni's REST API to answer on {self.rest_endpoint(service)}")
        if service == ETCD:
            health = f"http://{self.endpoint(ETCD)}/health"
            return Probe(lambda: requests.get(health, timeout=1).json().get("health") == "true",
                         f"GET /health to say healthy on {self.endpoint(ETCD)}")
        if service == REDIS:
            return pong(self.endpoint(REDIS))
        return self.stack.haproxy.probe

    # -- faults --------------------------------------------------------------------------------------------
    def kill_postgres(self, node: str) -> None:
        done = self.stack.containers.exec(COMPOSE_SERVICES[node], "sh", "-c", KILL_POSTGRES,
                                          expected="every PostgreSQL process to exit after SIGKILL", timeout=30,
                                          check=False)
        if done.returncode != 0:
            raise LabError(node, "every PostgreSQL process to exit after SIGKILL", self.log_path(node),
                           (done.stderr or done.stdout).strip() or f"the kill exited with {done.returncode}")

    def kill_node(self, node: str) -> None:
        self.stack.containers.kill(COMPOSE_SERVICES[node])
        self._frozen.discard(node)

    def pause_node(self, node: str) -> None:
        self._frozen.add(node)
        self.stack.containers.pause(COMPOSE_SERVICES[node])

    def resume_node(self, node: str) -> None:
        self.stack.containers.unpause(COMPOSE_SERVICES[node])
        self._frozen.discard(node)

    def start_node(self, node: str) -> None:
        self.stack.containers.start(COMPOSE_SERVICES[node])
        self._wait_ready(node, timeout=30)

    def _run_patronictl(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """In a node's container, with its config (it names etcd and Patroni's REST addresses)."""
        for node in NODES:
            running, paused = self.stack.containers.state(COMPOSE_SERVICES[node])
            if running and not paused:
                return self.stack.containers.exec(COMPOSE_SERVICES[node], "patronictl", "-c", CONFIG_IN_CONTAINER,
                                                  *args, user="postgres",
                                                  expected=f"patronictl {' '.join(args)} to run", timeout=timeout,
                                                  check=False)
        raise LabError("patroni", f"patronictl {' '.join(args)} to run", self.diagnostics(),
                       "no node's container is running")

    def haproxy_command(self, line: str) -> str:
        return self.stack.haproxy.command(line)

    # -- baseline and facts ----------------------------------------------------------------------------------
    def _ensure_running(self) -> None:
        for service in (ETCD, REDIS, HAPROXY, *NODES):
            compose_service = COMPOSE_SERVICES[service]
            running, paused = self.stack.containers.state(compose_service)
            if paused:
                self.stack.containers.unpause(compose_service)
            self._frozen.discard(service)
            if not running:
                self.stack.containers.start(compose_service)
                self._wait_ready(service)

    def patroni_version(self) -> str:
        done = self.stack.containers.exec(COMPOSE_SERVICES[NODES[0]], "patroni", "--version",
                                          expected="Patroni's version", check=False)
        return done.stdout.strip().split()[-1] if done.returncode == 0 and done.stdout.strip() else "?"

    def describe(self) -> dict[str, dict]:
        described = {}
        for service in self.services():
            running, paused = self.stack.containers.state(COMPOSE_SERVICES[service])
            described[service] = {"endpoint": str(self.endpoint(service)), "running": running, "paused": paused,
                                  "address": self.address(service), "log": str(self.log_path(service))}
        return described
