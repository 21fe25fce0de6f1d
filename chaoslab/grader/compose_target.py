"""A student's submission as a grader target: its own compose file, run as it is.

The grader works on a copy of the submission (its haproxy.cfg is edited in F3, as
the brief does by hand), in a compose project of its own named after a run directory
(chaoslab.rundir), so that a grading killed halfway is reaped by the next run like
any other. The services publish the ports the submission chose (the brief's:
5432, 5433, 6379, 5439): the student's API is written against them, so submissions
are graded one after another. Nothing of a graded submission outlives ``close``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import time
from pathlib import Path

import psycopg
import redis

from .. import rundir
from ..compose import project as lab_project
from ..compose.cli import Compose, check_engine, detect_compose, docker
from ..compose.containers import Containers
from ..errors import LabError
from ..topology import DB_NODES, HAPROXY, PRIMARY, REDIS, REPLICA, Endpoint
from .submission import Submission, SubmissionError
from .target import NotGradable, SqlFailed, Target

UP_TIMEOUT_S = 300
READY_DEADLINE_S = 120
SERVICE_READY_S = 60
# How long `stop`, `restart` and `down` let a container stop by itself before the engine kills
# it. Docker's default is 10 s, and with the brief's images a stop always takes all of it:
# SIGTERM is a smart shutdown for Bitnami's PostgreSQL and the official HAProxy image's
# STOPSIGNAL is SIGUSR1 (a soft stop), and both wait for the API's pooled sessions to end,
# which they never do by themselves. No check judges how a container stops, only what the
# API does once it is gone, so the grader does not wait that out (a grading of the
# brief-student reference: 49 s with the default, 24 s with this).
STOP_GRACE_S = 1
SQL_ERROR = "SQL :"
# When the superuser has no password: a first pg_hba.conf line that lets it in on the
# container's own socket, then a reload (SIGHUP to the postmaster). Bitnami keeps its
# pg_hba.conf in /opt/bitnami/postgresql/conf, the official image in PGDATA.
GRANT_LOCAL_SUPERUSER = r"""
line='local all postgres trust # chaoslab grader'
for hba in /opt/bitnami/postgresql/conf/pg_hba.conf "${PGDATA:-/nonexistent}/pg_hba.conf" \
           /bitnami/postgresql/data/pg_hba.conf; do
  [ -w "$hba" ] || continue
  grep -qF "$line" "$hba" || sed -i "1i $line" "$hba"
  for data in "${POSTGRESQL_DATA_DIR:-/nonexistent}" "${PGDATA:-/nonexistent}" /bitnami/postgresql/data; do
    [ -f "$data/postmaster.pid" ] && kill -HUP "$(head -n 1 "$data/postmaster.pid")" && exit 0
  done
done
exit 1
"""
# The brief's F3 edit: the server line of HAProxy's write backend names db-primary.
_SERVER_LINE = re.compile(r"^(\s*server\s+\S+\s+)db-primary(:\d+)", re.MULTILINE)


class ComposeSubmission(Target):
    """One submission's compose project; ``up`` starts it, ``close`` removes all of it."""

    def __init__(self, submission: Submission, out_dir: Path) -> None:
        self.submission = submission
        self.out_dir = out_dir
        self.app = submission.database
        self.api_url = ""
        self.run_dir: rundir.RunDir | None = None
        self.compose: Compose | None = None
        self._ports: dict[str, Endpoint] = {}
        self._services: list[str] | None = None
        self._index: Containers | None = None   # the project's containers, their ids kept

    # -- lifecycle ----------------------------------------------------------------------------------
    def up(self) -> None:
        try:
            check_engine()
            command = detect_compose()
        except LabError as exc:
            raise SubmissionError(f"pas de moteur Docker ou de docker compose ici : {exc}") from None
        rundir.reap_abandoned_runs()
        lab_project.reap_abandoned_projects()
        self.run_dir = rundir.RunDir.create()
        self.workdir = self.run_dir.path / "submission"
        shutil.copytree(self.submission.path, self.workdir, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "node_modules", ".venv", "reports", "__pycache__"))
        env_file = self.workdir / ".env"
        if not env_file.exists():   # as `cp .env.example .env`, or no variables at all
            example = self.workdir / ".env.example"
            env_file.write_text(example.read_text() if example.exists() else "")
        self.compose = Compose(command, [self.workdir / self.submission.compose_file.name],
                               lab_project.project_name(self.run_dir), env_file)
        self._check_config()
        done = self._compose("up", "-d", expected="`docker compose up -d`", timeout=UP_TIMEOUT_S, check=False)
        if not any(self.running_services().values()):
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise SubmissionError("`docker compose up -d` n'a démarré aucun service : " + " | ".join(detail))
        self._wait_until_answering(tuple(service for service in (PRIMARY, REPLICA, REDIS, HAPROXY)
                                         if service in self.declared_services()), READY_DEADLINE_S)

    def close(self) -> None:
        if self.run_dir is None:
            return
        if self.compose is not None:
            try:
                logs = self._containers().logs()
                self.out_dir.mkdir(parents=True, exist_ok=True)
                (self.out_dir / "compose.log").write_text(logs)
            except (LabError, OSError):
                pass   # the logs are lost, not the clean-up
            # What `down -v` removes, by the project's labels, from the engine.
            lab_project.remove_project(self.compose.project)
        self.run_dir.remove()
        self.run_dir = None

    def _compose(self, *args: str, expected: str, timeout: float = 120, check: bool = True):
        return self.compose(*args, service=self.submission.name, expected=expected, timeout=timeout, check=check)

    def _containers(self) -> Containers:
        """One index for the grading: a container's id is asked of the engine once, not before
        every fault and check (the grader never recreates a container, so an id stays right)."""
        if self._index is None:
            self._index = Containers(self.compose.project, self.log_hint)
        return self._index

    def _check_config(self) -> None:
        """The file parses; its services are kept (the grader never edits the compose file, F3
        edits haproxy.cfg), so compose is asked once: with v1, half a CPU-second a command."""
        done = self._compose("config", "--services", expected="a compose file that parses", timeout=60, check=False)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-2:]
            raise SubmissionError(f"{self.submission.compose_file.name} ne se lit pas : " + " | ".join(detail))
        self._services = done.stdout.split()

    # -- where things are --------------------------------------------------------------------------------
    def declared_services(self) -> list[str]:
        return list(self._services or [])

    def running_services(self) -> dict[str, bool]:
        containers = self._containers()
        return {service: containers.state(service)[0] for service in self.declared_services()}

    def container(self, service: str) -> str:
        container = self._containers().id(service)
        if container is None:
            raise NotGradable(f"le service {service} n'a pas de conteneur")
        return container

    def endpoint(self, service: str) -> Endpoint:
        """The first TCP port the service publishes on the host, read from the engine."""
        if service not in self._ports:
            self.container(service)   # NotGradable if it has none
            published = sorted(self._containers().published_ports(service).items())
            if not published:
                raise NotGradable(f"le service {service} ne publie aucun port sur l'hôte")
            self._ports[service] = Endpoint("127.0.0.1", published[0][1])
        return self._ports[service]

    def log_hint(self, service: str | None = None) -> str:
        if self.compose is None:
            return str(self.out_dir / "compose.log")
        return f"{shlex.join(self.compose.base)} logs {service or ''}".rstrip()

    # -- the brief's manual operations ----------------------------------------------------------------
    def _declared(self, service: str) -> None:
        if service not in self.declared_services():
            raise NotGradable(f"le service {service} n'existe pas dans le docker-compose.yml")

    # `docker compose stop`, `start` and `restart` are the engine's on the service's container,
    # which the engine is asked directly: no compose start-up in the middle of a check.
    def stop(self, service: str) -> None:
        self._declared(service)
        self.container(service)   # NotGradable if it has none
        self._containers().stop(service, STOP_GRACE_S)

    def start(self, service: str) -> None:
        self._declared(service)
        self.container(service)
        self._containers().start(service)
        self._wait_until_answering((service,), SERVICE_READY_S)

    def superuser_sql(self, service: str, query: str) -> list[tuple]:
        """psql in the node's container, as its superuser over the local socket, as the brief's
        `docker exec -it db-primary psql` does. When the superuser has no password there (the
        brief's Bitnami variables give it none), the grader lets it in on the container's socket
        only (GRANT_LOCAL_SUPERUSER), as whoever runs the lab by hand would."""
        container = self.container(service)
        env = self._container_env(container)
        users = list(dict.fromkeys(filter(None, (env.get("POSTGRES_USER"), "postgres"))))
        rows, errors = self._psql(container, service, users, env, query)
        if rows is None and errors and errors[-1].startswith(SQL_ERROR):
            raise SqlFailed(f"{query} sur {service} : {errors[-1]}")
        if rows is None:
            granted = docker("exec", container, "sh", "-c", GRANT_LOCAL_SUPERUSER, service=service,
                             expected="the superuser let in on the local socket", check=False, timeout=30)
            if granted.returncode == 0:
                deadline = time.monotonic() + 5   # the reload is asynchronous
                while rows is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                    rows, errors = self._psql(container, service, ["postgres"], env, query)
        if rows is None:
            raise NotGradable(f"pas d'accès superutilisateur à {service} par `docker exec ... psql` : "
                              + " | ".join(errors))
        return rows

    def _psql(self, container: str, service: str, users: list[str], env: dict[str, str],
              query: str) -> tuple[list[tuple] | None, list[str]]:
        password = env.get("POSTGRES_PASSWORD") or env.get("POSTGRESQL_POSTGRES_PASSWORD") or ""
        errors = []
        for user in users:
            done = docker("exec", "-e", "PGPASSWORD", "-e", "PGCONNECT_TIMEOUT=5", container, "psql", "-X", "-q",
                          "-U", user, "-d", "postgres", "-At", "-F", "\t", "-c", query,
                          service=service, expected=f"psql as {user}", check=False, timeout=60,
                          env={**os.environ, "PGPASSWORD": password})
            if done.returncode == 0:
                return [tuple(line.split("\t")) for line in done.stdout.splitlines() if line], errors
            lines = (done.stderr or done.stdout).strip().splitlines()
            # psql exits with 1 when it got in and the statement failed: that is no access problem.
            errors.append(f"{SQL_ERROR} {lines[0]}" if done.returncode == 1 and lines else (lines or [""])[-1])
            if done.returncode == 1:
                break
        return None, errors

    def switch_haproxy_to(self, node: str) -> None:
        config = self.workdir / "haproxy" / "haproxy.cfg"
        if not config.exists():
            raise NotGradable("pas de haproxy/haproxy.cfg dans la copie à modifier")
        edited, count = _SERVER_LINE.subn(rf"\g<1>{node}\g<2>", config.read_text())
        if count == 0:
            raise NotGradable("haproxy.cfg n'a pas de ligne `server ... db-primary:5432` à faire pointer ailleurs")
        with open(config, "w") as handle:   # the same inode: the container's bind mount sees it
            handle.write(edited)
        self.container(HAPROXY)
        self._containers().restart(HAPROXY, STOP_GRACE_S)
        self._wait_until_answering((HAPROXY,), SERVICE_READY_S, sql=False)

    # -- waiting ---------------------------------------------------------------------------------------
    def _container_env(self, container: str) -> dict[str, str]:
        done = docker("inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", container,
                      service="docker", expected="the container's environment", check=False)
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def _answers(self, service: str, sql: bool = True) -> bool:
        endpoint = self.endpoint(service)
        if service == REDIS:
            client = redis.Redis(host=endpoint.host, port=endpoint.port, socket_timeout=1, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        if not sql and service not in DB_NODES:
            with socket.create_connection((endpoint.host, endpoint.port), timeout=1):
                return True
        with psycopg.connect(host=endpoint.host, port=endpoint.port, user=self.app.user, password=self.app.password,
                             dbname=self.app.database, connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone()[0] == 1

    def _wait_until_answering(self, services: tuple[str, ...], deadline_s: float, sql: bool = True) -> None:
        """Until each service answers its protocol, its container exits, or the deadline: the
        checks then judge what does not answer."""
        ends = time.monotonic() + deadline_s
        containers = self._containers()
        for service in services:
            while time.monotonic() < ends:
                if not containers.state(service)[0]:
                    break   # its container exited: waiting cannot help
                try:
                    if self._answers(service, sql):
                        break
                except (psycopg.Error, redis.RedisError, OSError, NotGradable):
                    pass
                time.sleep(0.2)

