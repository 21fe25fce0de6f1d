"""The compose backend: the brief's docker-compose.yml, one project per run.

The stack is the repository's own ``docker-compose.yml``, unchanged; the run adds an
override file (its ports, fixed addresses on a network of its own, HAProxy's config
file and a directory for its runtime API socket) and an environment file (the
credentials, the images). Host ports are reserved free ports of 127.0.0.1, never the
brief's, so two runs never collide.

Which container is a service's comes from compose's labels; faults act on it with the
engine's own stop, kill, pause and start, and ``exec`` for ``pg_ctl promote``. A node
is cloned or rewound by a one-off container that shares its volumes while it is
stopped (``docker/lab-node.sh``), so both nodes can take either role.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from pytest_docker.plugin import DockerComposeExecutor, Services

from .. import haproxy_config, pg, rundir
from ..cluster import Cluster
from ..credentials import from_environment
from ..errors import LabError
from ..topology import (DB_NODES, HAPROXY, PRIMARY, REDIS, REPLICA, SERVICES, Credentials, Endpoint,
                        slot_name)
from ..waits import wait_until
from . import project as lab_project
from .cli import Compose, check_engine, detect_compose, docker
from .containers import Containers

LOCALHOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
PG_PORT = 5432
# Container ports of each service, and the variables the compose file publishes them with.
PUBLISHED = {PRIMARY: ("DB_PRIMARY_PORT", PG_PORT), REPLICA: ("DB_REPLICA_PORT", PG_PORT),
             REDIS: ("REDIS_PORT", 6379), HAPROXY: ("HAPROXY_PORT", PG_PORT)}
HAPROXY_READ = ("HAPROXY_READ_PORT", 5433)
IMAGE_VARIABLES = ("POSTGRES_IMAGE", "REDIS_IMAGE", "HAPROXY_IMAGE")
DEFAULT_IMAGES = {"POSTGRES_IMAGE": "postgres:16", "REDIS_IMAGE": "redis:7", "HAPROXY_IMAGE": "haproxy:2.9"}
# HAProxy's runtime API, twice: the config's own socket (a tmpfs in the container, for
# `docker exec`), and one in a directory of the run, reached from here.
SOCKET_DIR_IN_CONTAINER = "/var/run/chaoslab"
HAPROXY_CONFIG_IN_CONTAINER = "/usr/local/etc/haproxy/haproxy.cfg"
STOP_TIMEOUT = {PRIMARY: 20, REPLICA: 20, REDIS: 10, HAPROXY: 5}
# The services' logs outlive the containers here, for the last few runs.
LOGS_DIR = rundir.RUN_ROOT / "compose-logs"
KEEP_LOGS = 5


def with_host_socket(rendered: str) -> str:
    """A second runtime API socket, in the directory the run mounts, so the harness reaches it from here."""
    extra = f"stats socket {SOCKET_DIR_IN_CONTAINER}/admin.sock mode 666 level admin"
    rendered, count = re.subn(r"^(\s*)(stats socket \S+.*)$", rf"\1\2\n\1{extra}", rendered, count=1,
                              flags=re.MULTILINE)
    if count == 0:
        rendered, count = re.subn(r"^global\s*$", f"global\n  {extra}", rendered, count=1, flags=re.MULTILINE)
    if count == 0:
        raise ValueError("this HAProxy config has no global section to add the runtime API socket to")
    return rendered


def runtime_api(socket_path: Path, line: str, timeout: float = 2.0) -> str:
    """One command on an HAProxy runtime API socket, its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


class ComposeCluster(Cluster):
    """The brief's stack in containers: docker-compose.yml under a project of its own."""

    name = "compose"

    def __init__(self, creds: Credentials | None = None) -> None:
        super().__init__(creds or from_environment())
        self.run_dir: rundir.RunDir | None = None
        self.network: lab_project.LabNetwork | None = None
        self.containers: Containers | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        check_engine()
        compose_command = detect_compose()
        rundir.reap_abandoned_runs()
        lab_project.reap_abandoned_projects()
        self.run_dir = run_dir = rundir.RunDir.create()
        self.project = lab_project.project_name(run_dir)
        self.containers = Containers(self.project, self.log_path)
        try:
            self._endpoints = {service: Endpoint(LOCALHOST, run_dir.reserve_port()) for service in SERVICES}
            self._haproxy_read = Endpoint(LOCALHOST, run_dir.reserve_port())
            self.images = {name: os.environ.get(name) or DEFAULT_IMAGES[name] for name in IMAGE_VARIABLES}
            self._check_images()
            self.haproxy_dir = run_dir.service_dir(HAPROXY)
            self.haproxy_config = self.haproxy_dir / "haproxy.cfg"
            self.socket_dir = self.haproxy_dir / "run"
            self.socket_dir.mkdir(exist_ok=True)
            self.socket_dir.chmod(0o777)  # the image's haproxy user creates the socket there
            self.socket = self.socket_dir / "admin.sock"
            self.network = lab_project.LabNetwork.create(self.project)
            self._write_haproxy_config(self.haproxy_source)
            env = self._compose_environment()
            env_file = run_dir.path / "compose.env"
            lab_project.write_env_file(env_file, env)
            override = run_dir.path / "docker-compose.override.json"
            lab_project.write_override(override, self._override())
            self.compose = Compose(compose_command, [COMPOSE_FILE, override], self.project, env_file, set(env))
            self.compose("up", "-d", *SERVICES, service="lab", expected="`up -d` to start the stack", timeout=300)
            self._check_published_ports()
            for service in SERVICES:
                self._wait_ready(service)
            self.wait_streaming(REPLICA)
            self.wait_haproxy_settled()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.run_dir is None:
            return
        compose = getattr(self, "compose", None)
        if compose is not None:
            self._save_logs()
            try:
                compose("down", "-v", "--remove-orphans", "-t", "2", service="lab",
                        expected="`down -v` to remove the stack", timeout=120, check=False)
            except LabError:
                pass  # whatever is left goes by label just below
        lab_project.remove_project(self.project)
        self.run_dir.remove()
        self.run_dir = None
        self.network = None
        self.containers = None

    def _save_logs(self) -> None:
        """Keep every service's log after the run (the containers go): the last runs' are kept."""
        LOGS_DIR.mkdir(parents=True, exist_ok=True)
        try:
            done = self.compose("logs", "--no-color", "-t", service="lab", expected="the services' logs",
                                timeout=60, check=False)
            one_off = self.run_dir.path / "one-off.log"
            extra = f"\n== one-off operations (docker/lab-node.sh) ==\n{one_off.read_text()}" if one_off.exists() else ""
            lab_project.write_private(self.saved_logs, done.stdout + done.stderr + extra)
        except (LabError, OSError):
            return
        for old in sorted(LOGS_DIR.glob("*.log"), key=lambda path: path.stat().st_mtime)[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)

    def _check_images(self) -> None:
        missing = [image for image in self.images.values()
                   if docker("image", "inspect", image, service="docker", expected=f"the image {image}",
                             check=False).returncode != 0]
        if missing:
            raise LabError("docker", f"the images {', '.join(self.images.values())}",
                           cause=f"{', '.join(missing)} not on this engine. Pull them "
                                 "(`docker compose pull`, with the same POSTGRES_IMAGE/REDIS_IMAGE/HAPROXY_IMAGE), "
                                 "or, with no registry, build local stand-ins: scripts/build-local-images.sh, "
                                 "then `set -a; . docker/local-images.env; set +a`")

    def _compose_environment(self) -> dict[str, str]:
        creds = self.creds
        env = {
            "POSTGRES_USER": creds.superuser, "POSTGRES_PASSWORD": creds.superuser_password,
            "APP_DB_USER": creds.app_user, "APP_DB_PASSWORD": creds.app_password, "APP_DB_NAME": creds.database,
            "REPLICATION_USER": creds.replication_user, "REPLICATION_PASSWORD": creds.replication_password,
            "PUBLISH_ADDRESS": LOCALHOST, HAPROXY_READ[0]: str(self._haproxy_read.port),
            "HAPROXY_CONFIG": "haproxy.cfg",
            **self.images,
        }
        for service, (variable, _) in PUBLISHED.items():
            env[variable] = str(self._endpoints[service].port)
        return env

    def _override(self) -> dict:
        """What the run changes in docker-compose.yml: network, addresses, HAProxy's files."""
        services = {}
        for service in SERVICES:
            services[service] = {
                "networks": {"default": {"ipv4_address": self.network.address(service)}},
                "labels": {lab_project.OWNER_LABEL: self.project},
            }
        services[HAPROXY].update({
            "volumes": [f"{self.haproxy_config}:{HAPROXY_CONFIG_IN_CONTAINER}:ro",
                        f"{self.socket_dir}:{SOCKET_DIR_IN_CONTAINER}"],
            # The image's SIGUSR1 waits for every session to end; the harness wants the
            # brief's "restart drops every session", at once, as the local backend does.
            "stop_signal": "SIGTERM",
            "stop_grace_period": f"{STOP_TIMEOUT[HAPROXY]}s",
        })
        return {"services": services,
                "networks": {"default": {"external": True, "name": self.network.name}}}

    def _check_published_ports(self) -> None:
        """Read the published ports back from compose (pytest-docker's port_for)."""
        executor = DockerComposeExecutor(self.compose.shell_command, [str(path) for path in self.compose.files],
                                         self.project)
        services = Services(executor)
        expected = {service: (self._endpoints[service].port, container_port)
                    for service, (_, container_port) in PUBLISHED.items()}
        for service, (host_port, container_port) in expected.items():
            try:
                published = services.port_for(service, container_port)
            except Exception as exc:  # pytest-docker raises a bare Exception
                raise LabError(service, f"container port {container_port} published", self.log_path(service),
                               str(exc).strip().splitlines()[-1]) from None
            if published != host_port:
                raise LabError(service, f"container port {container_port} published on {host_port}",
                               self.log_path(service), f"compose published it on {published}")

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

    @property
    def saved_logs(self) -> Path:
        return LOGS_DIR / f"{self.project}.log"

    def log_path(self, service: str) -> str:
        """How to read a service's log now, and where it is kept once the run is over."""
        compose = getattr(self, "compose", None)
        if compose is None:
            return str(self.saved_logs) if hasattr(self, "project") else "docker compose logs"
        return f"{compose.logs_command(service)}; after the run: {self.saved_logs}"

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
            self.compose("up", "-d", "--no-deps", service, service=service, expected="`up -d` to create it again",
                         timeout=120)
        else:
            self.containers.start(service)
        self._wait_ready(service)

    def _wait_ready(self, service: str, timeout: float = 60) -> None:
        """Until the service answers its own protocol (not just its port); a container that exits fails at once."""
        if service in DB_NODES:
            def answers() -> bool:
                return pg.query_one(self.endpoint(service), self.creds, "SELECT 1", role="superuser",
                                    dbname="postgres") == 1
            expected = f"PostgreSQL to answer on {self.endpoint(service)}"
        elif service == REDIS:
            def answers() -> bool:
                client = self.redis()
                try:
                    return client.ping()
                finally:
                    client.close()
            expected = f"PONG on {self.endpoint(service)}"
        else:
            def answers() -> bool:
                return "Pid:" in self._runtime_api("show info")
            expected = f"its runtime API to answer on {self.socket}"
        exited = False

        def probe() -> bool:
            nonlocal exited
            if not self.is_running(service):
                exited = True
                return True
            return answers()
        wait_until(probe, service=service, expected=expected, timeout=timeout, interval=0.1,
                   log=self.log_path(service))
        if exited:
            raise LabError(service, expected, self.log_path(service), "its container exited")

    def _promote_with_pg_ctl(self, service: str) -> None:
        """The brief's F2: ``pg_ctl promote`` in the node's container, as the postgres user."""
        self._engine("exec", "-u", "postgres", self.containers.require(service), "sh", "-c",
                     'exec pg_ctl promote -D "$PGDATA" -w -t 30', service=service,
                     expected="pg_ctl promote to end recovery", timeout=60)

    # -- HAProxy ---------------------------------------------------------------------------
    def _write_haproxy_config(self, text: str) -> None:
        """Render a config of haproxy/ for this run, in place (the container mounts this file)."""
        addresses = haproxy_config.Addresses(
            nodes={node: Endpoint(self.network.address(node), PG_PORT) for node in DB_NODES},
            write_bind=Endpoint("*", PG_PORT), read_bind=Endpoint("*", HAPROXY_READ[1]),
            socket_path=Path(haproxy_config.SOCKET_PATH))
        rendered = with_host_socket(haproxy_config.render(text, addresses))
        with open(self.haproxy_config, "w") as handle:  # same inode: a file bind mount sees the change
            handle.write(rendered)

    def _apply_haproxy(self, text: str, how: str) -> None:
        if how not in ("restart", "reload"):
            raise ValueError(f"unknown way to apply a config: {how!r}")
        self._write_haproxy_config(text)
        running = self.is_running(HAPROXY)
        if running:
            self._engine("exec", self.containers.require(HAPROXY), "haproxy", "-c", "-q", "-f",
                         HAPROXY_CONFIG_IN_CONTAINER, service=HAPROXY,
                         expected=f"a valid configuration in {self.haproxy_config}")
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
        for line in self._runtime_api("show info").splitlines():
            if line.startswith("Pid:"):
                return line.split(":", 1)[1].strip()
        return ""

    def _runtime_api(self, line: str, timeout: float = 2.0) -> str:
        return runtime_api(self.socket, line, timeout)

    def haproxy_command(self, line: str) -> str:
        try:
            return self._runtime_api(line)
        except OSError as exc:
            raise LabError(HAPROXY, f"its runtime API to answer {line!r} on {self.socket}", self.log_path(HAPROXY),
                           str(exc)) from None

    def haproxy_view_of(self, service: str) -> Endpoint:
        return Endpoint(self.network.address(service), PG_PORT)

    # -- rebuilding roles ---------------------------------------------------------------------
    def rebuild_replica(self, standby: str, primary: str) -> None:
        """Stop the standby, clone its volume again from ``primary``, start it."""
        if self.is_running(standby):
            self._stop(standby)
        with pg.connect(self.endpoint(primary), self.creds, role="superuser", dbname="postgres") as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot_name(standby),))
        self._one_off(standby, "clone", primary, expected=f"pg_basebackup to clone {primary}")
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
        self._one_off(old_primary, "rewind", new_primary, expected=f"pg_rewind to resynchronise with {new_primary}")
        self._start(old_primary)

    def _one_off(self, node: str, action: str, source: str, *, expected: str, timeout: float = 120) -> None:
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
               "--entrypoint", "/lab/lab-node.sh", image, action, source, str(PG_PORT), slot_name(node),
               service=node, expected=expected, log=self.log_path(node), timeout=timeout, env=env)
        # What the tool said goes into the run's log of one-off operations (kept with the run).
        with open(self.run_dir.path / "one-off.log", "a") as log:
            log.write(f"$ lab-node.sh {action} {source} ({node})\n{done.stdout}{done.stderr}\n")

    # -- bonus topologies ---------------------------------------------------------------------
    def redis_ha(self):
        """The Sentinel group as services of this run's project (profile ``sentinel``); the caller starts it."""
        if self.run_dir is None:
            raise LabError("redis-sentinel", "the lab to be started before its Sentinel group")
        from .sentinel import ComposeRedisHA
        return ComposeRedisHA(self)

    # -- for people ------------------------------------------------------------------------------
    def describe(self) -> dict[str, dict]:
        described = super().describe()
        for service, info in described.items():
            info["container"] = self.container(service) or ""
            info["address"] = self.network.address(service) if self.network else ""
        return described
