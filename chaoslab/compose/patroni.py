"""The Patroni topology in containers: profile ``patroni`` of docker-compose.yml, one project per run.

etcd, two Patroni nodes (the official postgres image plus Patroni,
docker/patroni/Dockerfile), HAProxy with haproxy/haproxy-patroni.cfg and the
brief's Redis, as a compose project of their own (``chaoslab-<run id>``) on a
network of their own with fixed addresses, as ComposeCluster does for the
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

import os
import shlex
import subprocess
from pathlib import Path

import requests

from .. import haproxy_config, rundir
from ..credentials import from_environment
from ..errors import LabError
from ..patroni.base import BasePatroniCluster
from ..patroni.config import (ETCD, LAB_TIMINGS, NODES, SCOPE, NodeAddresses, Timings, haproxy_source, node_config,
                              node_config_text)
from ..topology import HAPROXY, REDIS, REPLICA, Credentials, Endpoint
from ..waits import wait_until
from . import project as lab_project
from .cli import Compose, check_engine, detect_compose, docker
from .cluster import (COMPOSE_FILE, HAPROXY_CONFIG_IN_CONTAINER, LOCALHOST, LOGS_DIR, SOCKET_DIR_IN_CONTAINER,
                      runtime_api, with_host_socket)
from .containers import Containers

PROFILE = "patroni"
# The harness's names for the services, and compose's.
COMPOSE_SERVICES = {ETCD: "etcd", NODES[0]: "pg-1", NODES[1]: "pg-2", HAPROXY: "haproxy-patroni", REDIS: "redis"}
PG_PORT, REST_PORT, ETCD_PORT, REDIS_PORT = 5432, 8008, 2379, 6379
HAPROXY_WRITE_PORT, HAPROXY_READ_PORT = 5432, 5433
# What the compose file publishes, by variable: (service, container port).
PUBLISHED = {
    "PG_1_PORT": (NODES[0], PG_PORT), "PG_1_REST_PORT": (NODES[0], REST_PORT),
    "PG_2_PORT": (NODES[1], PG_PORT), "PG_2_REST_PORT": (NODES[1], REST_PORT),
    "ETCD_PORT": (ETCD, ETCD_PORT), "REDIS_PORT": (REDIS, REDIS_PORT),
    "HAPROXY_PATRONI_PORT": (HAPROXY, HAPROXY_WRITE_PORT), "HAPROXY_PATRONI_READ_PORT": (HAPROXY, HAPROXY_READ_PORT),
}
DEFAULT_IMAGES = {"PATRONI_IMAGE": "chaoslab-patroni:latest", "ETCD_IMAGE": "gcr.io/etcd-development/etcd:v3.5.17",
                  "REDIS_IMAGE": "redis:7", "HAPROXY_IMAGE": "haproxy:2.9"}
# Inside a node's container (docker/patroni/entrypoint.sh and the image).
NODE_DIR_IN_CONTAINER = "/lab/node"
CONFIG_IN_CONTAINER = "/var/lib/postgresql/patroni.yml"
DATA_DIR = Path("/var/lib/postgresql/data/pgdata")
SOCKET_DIR = Path("/var/run/postgresql")
STOP_TIMEOUT = {ETCD: 10, NODES[0]: 25, NODES[1]: 25, HAPROXY: 5, REDIS: 10}
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


def node_files(name: str, *, address: str, etcd: str, creds: Credentials, timings: Timings = LAB_TIMINGS) -> str:
    """A node's patroni.yml for a container: it binds every address and is reached at ``address``
    (its container's, or its service name); TCP clients of its own networks only (HAProxy, the
    other node, the host through the published ports), with a password."""
    config = node_config(name, addresses=NodeAddresses(Endpoint(address, PG_PORT), Endpoint(address, REST_PORT)),
                         listen=NodeAddresses(Endpoint("0.0.0.0", PG_PORT), Endpoint("0.0.0.0", REST_PORT)),
                         etcd=Endpoint(etcd, ETCD_PORT), data_dir=DATA_DIR, bin_dir=None, socket_dir=SOCKET_DIR,
                         creds=creds, timings=timings, client_networks=("samenet",))
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
        self.run_dir: rundir.RunDir | None = None
        self.network: lab_project.LabNetwork | None = None
        self.compose: Compose | None = None
        self._frozen: set[str] = set()   # nodes this harness paused: their REST API would only time out

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        check_engine()
        compose_command = detect_compose()
        rundir.reap_abandoned_runs()
        lab_project.reap_abandoned_projects()
        self.run_dir = run_dir = rundir.RunDir.create()
        self.project = lab_project.project_name(run_dir)
        self.containers = Containers(self.project, self._compose_log_hint)
        try:
            self._published = {variable: Endpoint(LOCALHOST, run_dir.reserve_port()) for variable in PUBLISHED}
            self.images = {name: os.environ.get(name) or default for name, default in DEFAULT_IMAGES.items()}
            self._check_images()
            self.network = lab_project.LabNetwork.create(self.project)
            self.nodes_dir = run_dir.service_dir("patroni")
            for node in NODES:
                write_node_config(self.nodes_dir / node, node_files(
                    node, address=self.address(node), etcd=self.address(ETCD), creds=self.creds,
                    timings=self.timings))
                self.log_path(node).touch()
            self.haproxy_dir = run_dir.service_dir(HAPROXY)
            self.socket_dir = self.haproxy_dir / "run"
            self.socket_dir.mkdir(exist_ok=True)
            self.socket_dir.chmod(0o777)  # the image's haproxy user creates the socket there
            self.socket = self.socket_dir / "admin.sock"
            self.haproxy_config_path = self.haproxy_dir / "haproxy.cfg"
            self.haproxy_config_path.write_text(self.haproxy_config())
            env = self._compose_environment()
            env_file = run_dir.path / "compose.env"
            lab_project.write_env_file(env_file, env)
            override = run_dir.path / "docker-compose.override.json"
            lab_project.write_override(override, self._override())
            self.compose = Compose(compose_command, [COMPOSE_FILE, override], self.project, env_file, set(env))

            self._up(ETCD)
            first, second = NODES
            self._up(first)
            wait_until(lambda: self.leader() == first and self.sql_role(first) == "primary", service=first,
                       expected="to bootstrap the cluster and lead it", timeout=90, log=self.log_path(first))
            self._create_application_database(first)
            self._up(second)
            self.wait_replication(timeout=90)
            self._up(REDIS)
            self._up(HAPROXY)
            self.wait_haproxy_settled()
        except BaseException:
            self.close()
            raise

    def _up(self, service: str) -> None:
        self.compose("--profile", PROFILE, "up", "-d", "--no-deps", COMPOSE_SERVICES[service], service=service,
                     expected="`up -d` to start it", timeout=180)
        self._wait_ready(service)

    def _check_images(self) -> None:
        missing = [image for image in self.images.values()
                   if docker("image", "inspect", image, service="docker", expected=f"the image {image}",
                             check=False).returncode != 0]
        if missing:
            raise LabError("docker", f"the images {', '.join(self.images.values())}",
                           cause=f"{', '.join(missing)} not on this engine. Pull etcd, redis and haproxy and build "
                                 "the Patroni image (`docker compose --profile patroni pull etcd redis "
                                 "haproxy-patroni; docker compose --profile patroni build pg-1`), or, with no "
                                 "registry, build local stand-ins: scripts/build-local-images.sh, "
                                 "then `set -a; . docker/local-images.env; set +a`")

    def address(self, service: str) -> str:
        """A service's fixed address on the run's network."""
        return self.network.address(COMPOSE_SERVICES[service])

    def haproxy_config(self) -> str:
        """haproxy-patroni.cfg with the nodes' fixed addresses (HAProxy resolves names only at start,
        and a node may be down then), plus a runtime API socket the harness reaches."""
        addresses = haproxy_config.Addresses(
            nodes={node: Endpoint(self.address(node), PG_PORT) for node in NODES},
            write_bind=Endpoint("*", HAPROXY_WRITE_PORT), read_bind=Endpoint("*", HAPROXY_READ_PORT),
            socket_path=Path(haproxy_config.SOCKET_PATH))
        return with_host_socket(haproxy_config.render(haproxy_source(), addresses))

    def _compose_environment(self) -> dict[str, str]:
        creds = self.creds
        env = {
            "POSTGRES_USER": creds.superuser, "POSTGRES_PASSWORD": creds.superuser_password,
            "APP_DB_USER": creds.app_user, "APP_DB_PASSWORD": creds.app_password, "APP_DB_NAME": creds.database,
            "REPLICATION_USER": creds.replication_user, "REPLICATION_PASSWORD": creds.replication_password,
            "PUBLISH_ADDRESS": LOCALHOST, "ETCD_ADDRESS": self.address(ETCD),
            "PATRONI_NODES_DIR": str(self.nodes_dir),
            **self.images,
        }
        env.update({variable: str(endpoint.port) for variable, endpoint in self._published.items()})
        return env

    def _override(self) -> dict:
        services = {compose_name: {"networks": {"default": {"ipv4_address": self.network.address(compose_name)}},
                                   "labels": {lab_project.OWNER_LABEL: self.project}}
                    for compose_name in COMPOSE_SERVICES.values()}
        services[COMPOSE_SERVICES[HAPROXY]].update({
            "volumes": [f"{self.haproxy_config_path}:{HAPROXY_CONFIG_IN_CONTAINER}:ro",
                        f"{self.socket_dir}:{SOCKET_DIR_IN_CONTAINER}"],
            "stop_signal": "SIGTERM",
            "stop_grace_period": f"{STOP_TIMEOUT[HAPROXY]}s",
        })
        return {"services": services, "networks": {"default": {"external": True, "name": self.network.name}}}

    def close(self) -> None:
        if self.run_dir is None:
            return
        if self.compose is not None:
            self._save_logs()
            try:
                self.compose("--profile", PROFILE, "down", "-v", "--remove-orphans", "-t", "5", service=SCOPE,
                             expected="`down -v` to remove the stack", timeout=120, check=False)
            except LabError:
                pass  # whatever is left goes by label just below
        lab_project.remove_project(self.project)
        self.run_dir.remove()
        self.run_dir = None
        self.network = None
        self.compose = None

    @property
    def saved_logs(self) -> Path:
        return LOGS_DIR / f"{self.project}.log"

    def _save_logs(self) -> None:
        LOGS_DIR.mkdir(parents=True, exist_ok=True)
        try:
            done = self.compose("--profile", PROFILE, "logs", "--no-color", "-t", service=SCOPE,
                                expected="the services' logs", timeout=60, check=False)
            lab_project.write_private(self.saved_logs, done.stdout + done.stderr)
        except (LabError, OSError):
            return

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
        return self._compose_log_hint(COMPOSE_SERVICES.get(service, service))

    def _compose_log_hint(self, compose_service: str | None = None) -> str:
        if self.compose is None:
            return str(self.saved_logs)
        command = f"{shlex.join(self.compose.base)} --profile {PROFILE} logs"
        return f"{command} {compose_service or ''}".rstrip() + f"; after the run: {self.saved_logs}"

    def diagnostics(self) -> str:
        return self._compose_log_hint()

    def rest_may_answer(self, node: str) -> bool:
        # A stopped container publishes no port (refused at once); a frozen one would hang.
        return node not in self._frozen

    # -- readiness ---------------------------------------------------------------------------------------
    def _wait_ready(self, service: str, timeout: float = 60) -> None:
        """Until the service answers its own protocol; a container that exits fails at once."""
        compose_service = COMPOSE_SERVICES[service]
        if service in NODES:
            def answers() -> bool:   # GET /patroni answers with the node's state, whatever it is
                return isinstance(self.rest_get(service, "/patroni").json(), dict)
            expected = f"Patroni's REST API to answer on {self.rest_endpoint(service)}"
        elif service == ETCD:
            def answers() -> bool:
                return requests.get(f"http://{self.endpoint(ETCD)}/health", timeout=1).json().get("health") == "true"
            expected = f"GET /health to say healthy on {self.endpoint(ETCD)}"
        elif service == REDIS:
            def answers() -> bool:
                client = self.redis()
                try:
                    return client.ping()
                finally:
                    client.close()
            expected = f"PONG on {self.endpoint(REDIS)}"
        else:
            def answers() -> bool:
                return "Pid:" in runtime_api(self.socket, "show info")
            expected = f"its runtime API to answer on {self.socket}"
        exited = False

        def probe() -> bool:
            nonlocal exited
            if not self.containers.state(compose_service)[0]:
                exited = True
                return True
            return answers()
        wait_until(probe, service=service, expected=expected, timeout=timeout, interval=0.1,
                   log=self.log_path(service))
        if exited:
            raise LabError(service, expected, self.log_path(service), "its container exited")

    # -- faults --------------------------------------------------------------------------------------------
    def kill_postgres(self, node: str) -> None:
        done = self.containers.exec(COMPOSE_SERVICES[node], "sh", "-c", KILL_POSTGRES,
                                    expected="every PostgreSQL process to exit after SIGKILL", timeout=30,
                                    check=False)
        if done.returncode != 0:
            raise LabError(node, "every PostgreSQL process to exit after SIGKILL", self.log_path(node),
                           (done.stderr or done.stdout).strip() or f"the kill exited with {done.returncode}")

    def kill_node(self, node: str) -> None:
        self.containers.kill(COMPOSE_SERVICES[node])
        self._frozen.discard(node)

    def pause_node(self, node: str) -> None:
        self._frozen.add(node)
        self.containers.pause(COMPOSE_SERVICES[node])

    def resume_node(self, node: str) -> None:
        self.containers.unpause(COMPOSE_SERVICES[node])
        self._frozen.discard(node)

    def start_node(self, node: str) -> None:
        self.containers.start(COMPOSE_SERVICES[node])
        self._wait_ready(node, timeout=30)

    def _run_patronictl(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """In a node's container, with its config (it names etcd and Patroni's REST addresses)."""
        for node in NODES:
            running, paused = self.containers.state(COMPOSE_SERVICES[node])
            if running and not paused:
                return self.containers.exec(COMPOSE_SERVICES[node], "patronictl", "-c", CONFIG_IN_CONTAINER, *args,
                                            user="postgres", expected=f"patronictl {' '.join(args)} to run",
                                            timeout=timeout, check=False)
        raise LabError("patroni", f"patronictl {' '.join(args)} to run", self.diagnostics(),
                       "no node's container is running")

    def haproxy_command(self, line: str) -> str:
        try:
            return runtime_api(self.socket, line)
        except OSError as exc:
            raise LabError(HAPROXY, f"its runtime API to answer {line!r} on {self.socket}", self.log_path(HAPROXY),
                           str(exc)) from None

    # -- baseline and facts ----------------------------------------------------------------------------------
    def _ensure_running(self) -> None:
        for service in (ETCD, REDIS, HAPROXY, *NODES):
            compose_service = COMPOSE_SERVICES[service]
            running, paused = self.containers.state(compose_service)
            if paused:
                self.containers.unpause(compose_service)
            self._frozen.discard(service)
            if not running:
                self.containers.start(compose_service)
                self._wait_ready(service)

    def patroni_version(self) -> str:
        done = self.containers.exec(COMPOSE_SERVICES[NODES[0]], "patroni", "--version", expected="Patroni's version",
                                    check=False)
        return done.stdout.strip().split()[-1] if done.returncode == 0 and done.stdout.strip() else "?"

    def describe(self) -> dict[str, dict]:
        described = {}
        for service in self.services():
            running, paused = self.containers.state(COMPOSE_SERVICES[service])
            described[service] = {"endpoint": str(self.endpoint(service)), "running": running, "paused": paused,
                                  "address": self.address(service), "log": str(self.log_path(service))}
        return described
