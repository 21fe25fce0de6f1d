"""The compose backend: the brief's docker-compose.yml, one project per run.

The brief's four services as a compose stack of their own (compose/stack.py: the
run's files, fixed addresses, logs and clean-up), with HAProxy's config rendered for
their addresses. Host ports are reserved free ports of 127.0.0.1, never the brief's,
so two runs never collide.

Which container is a service's comes from compose's labels; faults act on it with the
engine's own stop, kill, pause and start, and ``exec`` for ``pg_ctl promote``. A node
is cloned or rewound by a one-off container that shares its volumes while it is
stopped (``docker/lab-node.sh``), so both nodes can take either role.
"""

from __future__ import annotations

import os

from .. import pg, rundir
from ..cluster import Cluster
from ..credentials import from_environment
from ..errors import LabError
from ..network import LINKS, Link
from ..topology import DB_NODES, HAPROXY, PRIMARY, REDIS, REPLICA, SERVICES, Credentials, Endpoint, slot_name
from ..waits import wait_until
from . import faultproxy, haproxy
from . import project as lab_project
from .cli import docker
from .containers import Containers
from .partitions import ContainerPartitions
from .probe import Probe, pong
from .sentinel import ComposeRedisHA
from .stack import ComposeStack

PG_PORT = 5432
# Container ports of each service, and the variables the compose file publishes them with.
PUBLISHED = {PRIMARY: ("DB_PRIMARY_PORT", PG_PORT), REPLICA: ("DB_REPLICA_PORT", PG_PORT),
             REDIS: ("REDIS_PORT", 6379), HAPROXY: ("HAPROXY_PORT", haproxy.WRITE_PORT)}
# Where a link (chaoslab.network.LINKS) or a partition's probe reaches each service in the network.
CONTAINER_PORTS = {service: port for service, (_, port) in PUBLISHED.items()}
HAPROXY_READ_VARIABLE = "HAPROXY_READ_PORT"
# The API's image runs the fault proxy (it has Starlette and uvicorn).
DEFAULT_IMAGES = {"POSTGRES_IMAGE": "postgres:16", "REDIS_IMAGE": "redis:7", "HAPROXY_IMAGE": "haproxy:2.9",
                  "API_IMAGE": "chaoslab-api:latest"}
HOW_TO_GET_IMAGES = ("Pull them (`docker compose pull`, with the same POSTGRES_IMAGE/REDIS_IMAGE/HAPROXY_IMAGE) and "
                     "build the API's (`docker compose --profile api build api`)")
STOP_TIMEOUT = {PRIMARY: 20, REPLICA: 20, REDIS: 10, HAPROXY: haproxy.STOP_TIMEOUT}


class ComposeCluster(Cluster):
    """The brief's stack in containers: docker-compose.yml under a project of its own."""

    name = "compose"

    def __init__(self, creds: Credentials | None = None) -> None:
        super().__init__(creds or from_environment())
        self.stack: ComposeStack | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        # Profile "faults" enables the fault proxy beside the brief's services (which have no profile).
        self.stack = stack = ComposeStack.open(self.creds, extra_profiles=(faultproxy.PROFILE,))
        with stack.closed_on_failure():
            self._endpoints = {service: stack.reserve_endpoint() for service in SERVICES}
            self._haproxy_read = stack.reserve_endpoint()
            faultproxy_api = stack.reserve_endpoint()
            stack.use_images(DEFAULT_IMAGES, HOW_TO_GET_IMAGES)
            stack.add_haproxy(HAPROXY)
            stack.create_network()
            links = faultproxy.plan(self.network, LINKS, CONTAINER_PORTS)
            # The replica's first clone and its streaming go through its link: the proxy starts
            # first (no depends_on: a profile's service cannot be one, for the stacks beside this one).
            via = links[Link(REPLICA, PRIMARY)][0]
            stack.service_overrides[REPLICA] = {"environment": {"PRIMARY_HOST": via.host, "PRIMARY_PORT": str(via.port)}}
            self._write_haproxy_config(self.haproxy_source)
            stack.write_files([*SERVICES, faultproxy.SERVICE],
                              {HAPROXY_READ_VARIABLE: str(self._haproxy_read.port), "HAPROXY_CONFIG": "haproxy.cfg"},
                              {**{variable: self._endpoints[service] for service, (variable, _) in PUBLISHED.items()},
                               faultproxy.API_PORT_VARIABLE: faultproxy_api})
            self.fault_links = faultproxy.start(stack, faultproxy_api, links, LINKS)
            self.partitions = ContainerPartitions(stack.containers, self.network.address, CONTAINER_PORTS)
            stack.run("up", "-d", *SERVICES, service="lab", expected="`up -d` to start the stack", timeout=300)
            self._check_published_ports()
            for service in SERVICES:
                self._wait_ready(service)
            self.wait_streaming(REPLICA)
            self.wait_haproxy_settled()

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.fault_links = self.partitions = None

    def _check_published_ports(self) -> None:
        """Read the published ports back from the engine: a compose file that ignores its port
        variables would send every probe to another lab, or to nothing."""
        for service, (_, container_port) in PUBLISHED.items():
            host_port = self._endpoints[service].port
            published = self.containers.published_ports(service).get(container_port)
            if published != host_port:
                raise LabError(service, f"container port {container_port} published on {host_port}",
                               self.log_path(service), f"the engine reports {published or 'none'}")

    # -- the run's stack, by the names the harness uses -------------------------------
    @property
    def run_dir(self) -> rundir.RunDir | None:
        return self.stack.run_dir if self.stack else None

    @property
    def project(self) -> str | None:
        return self.stack.project if self.stack else None

    @property
    def network(self) -> lab_project.LabNetwork | None:
        return self.stack.network if self.stack else None

    @property
    def containers(self) -> Containers | None:
        return self.stack.containers if self.stack else None

    # -- containers ---------------------------------------------------------------------
    def container(self, service: str) -> str | None:
        """The id of the compose container of ``service``, or None if there is none."""
        return self.containers.id(service) if self.containers else None

    def _engine(self, *args: str, service: str, expected: str, timeout: float = 60):
        return self.containers.engine(*args, service=service, expected=expected, timeout=timeout)

    # -- where things are ----------------------------------------------------------------
    def endpoint(self, service: str) -> Endpoint:
        return self._endpoints[service]

    def haproxy_read_endpoint(self) -> Endpoint:
        return self._haproxy_read

    def log_path(self, service: str) -> str:
        """How to read a service's log now, and where it is kept once the run is over."""
        return self.stack.log_hint(service) if self.stack else "docker compose logs"

    def is_running(self, service: str) -> bool:
        return self.containers.state(service)[0] if self.containers else False

    def is_paused(self, service: str) -> bool:
        return self.containers.state(service)[1] if self.containers else False

    # -- faults --------------------------------------------------------------------------
    def _stop(self, service: str) -> None:
        """The image's stop signal (SIGINT: PostgreSQL's fast shutdown), SIGKILL past the deadline."""
        self.containers.stop(service, STOP_TIMEOUT[service])

    def _kill(self, service: str) -> None:
        """SIGKILL: a crash, with no chance to flush or say goodbye."""
        self.containers.kill(service)

    def _pause(self, service: str) -> None:
        """The cgroup freezer: the container still accepts TCP connections and never answers."""
        self.containers.pause(service)

    def _resume(self, service: str) -> None:
        self.containers.unpause(service)

    def _start(self, service: str) -> None:
        if self.container(service) is None:
            self.stack.run("up", "-d", "--no-deps", service, service=service,
                           expected="`up -d` to create it again", timeout=120)
        else:
            self.containers.start(service)
        self._wait_ready(service)

    def _wait_ready(self, service: str, timeout: float = 60) -> None:
        self.stack.wait_ready(service, self._probe(service), log=self.log_path(service), timeout=timeout)

    def _probe(self, service: str) -> Probe:
        if service in DB_NODES:
            return Probe(lambda: pg.query_one(self.endpoint(service), self.creds, "SELECT 1", role="superuser",
                                              dbname="postgres") == 1,
                         f"PostgreSQL to answer on {self.endpoint(service)}")
        if service == REDIS:
            return pong(self.endpoint(service))
        return self.stack.haproxy.probe

    def _promote_with_pg_ctl(self, service: str) -> None:
        """The brief's F2: ``pg_ctl promote`` in the node's container, as the postgres user."""
        self._engine("exec", "-u", "postgres", self.containers.require(service), "sh", "-c",
                     'exec pg_ctl promote -D "$PGDATA" -w -t 30', service=service,
                     expected="pg_ctl promote to end recovery", timeout=60)

    # -- HAProxy ---------------------------------------------------------------------------
    def _write_haproxy_config(self, text: str) -> None:
        self.stack.haproxy.write_config(text, {node: self.haproxy_view_of(node) for node in DB_NODES})

    def _apply_haproxy(self, text: str, how: str) -> None:
        if how not in ("restart", "reload"):
            raise ValueError(f"unknown way to apply a config: {how!r}")
        self._write_haproxy_config(text)
        running = self.is_running(HAPROXY)
        if running:
            self._engine("exec", self.containers.require(HAPROXY), "haproxy", "-c", "-q", "-f",
                         haproxy.CONFIG_IN_CONTAINER, service=HAPROXY,
                         expected=f"a valid configuration in {self.stack.haproxy.config}")
        if how == "reload" and running:
            self._reload_haproxy()
        else:
            if running:
                self._stop(HAPROXY)
            self._start(HAPROXY)

    def _reload_haproxy(self, timeout: float = 10) -> None:
        """Hitless reload: SIGUSR2 to the master (PID 1); new workers take over, old ones drain."""
        before = self._worker_pid()
        self._engine("kill", "-s", "USR2", self.containers.require(HAPROXY), service=HAPROXY,
                     expected="the master to get SIGUSR2")
        wait_until(lambda: self._worker_pid() not in ("", before), service=HAPROXY,
                   expected="a new worker to answer after the reload", timeout=timeout, log=self.log_path(HAPROXY))

    def _worker_pid(self) -> str:
        for line in self.stack.haproxy.runtime_api("show info").splitlines():
            if line.startswith("Pid:"):
                return line.split(":", 1)[1].strip()
        return ""

    def haproxy_command(self, line: str) -> str:
        return self.stack.haproxy.command(line)

    def _node_address(self, service: str) -> Endpoint:
        return Endpoint(self.network.address(service), PG_PORT)

    # -- rebuilding roles ---------------------------------------------------------------------
    def rebuild_replica(self, standby: str, primary: str) -> None:
        """Stop the standby, clone its volume again from ``primary``, start it."""
        if self.is_running(standby):
            self._stop(standby)
        with pg.connect(self.endpoint(primary), self.creds, role="superuser", dbname="postgres") as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot_name(standby),))
        self._one_off(standby, "clone", self.replication_source(standby, primary) or self._node_address(primary),
                      expected=f"pg_basebackup to clone {primary}")
        self._start(standby)

    def rejoin(self, old_primary: str, new_primary: str) -> None:
        """Turn a stopped ex-primary into a standby of the new primary with pg_rewind."""
        if self.is_running(old_primary):
            self._stop(old_primary)
        with pg.connect(self.endpoint(new_primary), self.creds, role="superuser", dbname="postgres") as conn:
            if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                (slot_name(old_primary),)).fetchone():
                conn.execute("SELECT pg_create_physical_replication_slot(%s)", (slot_name(old_primary),))
            # pg_rewind reads the source's timeline from its control file, which a freshly
            # promoted node updates only at its next checkpoint: without this, it can see
            # the old timeline and answer "no rewind required".
            conn.execute("CHECKPOINT")
        self._one_off(old_primary, "rewind",
                      self.replication_source(old_primary, new_primary) or self._node_address(new_primary),
                      expected=f"pg_rewind to resynchronise with {new_primary}")
        self._start(old_primary)

    def _one_off(self, node: str, action: str, source: Endpoint, *, expected: str, timeout: float = 120) -> None:
        """docker/lab-node.sh in a container that shares the stopped node's volumes and network."""
        container = self.containers.require(node)
        image = self._engine("inspect", "-f", "{{.Image}}", container, service=node,
                             expected="its image").stdout.strip()
        env = dict(os.environ, POSTGRES_USER=self.creds.superuser, POSTGRES_PASSWORD=self.creds.superuser_password,
                   REPLICATION_USER=self.creds.replication_user,
                   REPLICATION_PASSWORD=self.creds.replication_password)
        # Values go through the environment, never on the command line (`ps` shows that).
        done = docker("run", "--rm", "--volumes-from", container, "--network", self.network.name,
               "--label", f"{lab_project.OWNER_LABEL}={self.project}",
               "-e", "POSTGRES_USER", "-e", "POSTGRES_PASSWORD", "-e", "REPLICATION_USER", "-e", "REPLICATION_PASSWORD",
               "--entrypoint", "/lab/lab-node.sh", image, action, source.host, str(source.port), slot_name(node),
               service=node, expected=expected, log=self.log_path(node), timeout=timeout, env=env)
        self.stack.record_one_off(f"$ lab-node.sh {action} {source.host} {source.port} ({node})",
                                  done.stdout + done.stderr)

    # -- bonus topologies ---------------------------------------------------------------------
    def redis_ha(self):
        """The Sentinel group as services of this run's project (profile ``sentinel``); the caller starts it."""
        if self.run_dir is None:
            raise LabError("redis-sentinel", "the lab to be started before its Sentinel group")
        return ComposeRedisHA(self.stack, self.fault_links)

    # -- for people ------------------------------------------------------------------------------
    def describe(self) -> dict[str, dict]:
        described = super().describe()
        for service, info in described.items():
            info["container"] = self.container(service) or ""
            info["address"] = self.network.address(service) if self.network else ""
        return described
