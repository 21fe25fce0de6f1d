"""The containers of one compose project, found by compose's labels and driven by the engine.

The bonus topologies (Sentinel, Patroni) break their services the way ComposeCluster
breaks the brief's: the engine's stop, kill, pause and start, which is all that
``docker compose stop`` does too, without compose's start-up cost in the middle of a
measured scenario. Past ``up``, compose is asked nothing: published ports, logs and
removal come from the engine too (with compose v1, a Python program, each compose
command costs half a CPU-second; a docker command a few hundredths).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import LabError
from ..waits import wait_until
from .cli import docker

SERVICE_LABEL = "com.docker.compose.service"


@dataclass
class Containers:
    project: str
    log_for: Callable[[str], str]   # how to read a service's log, for error messages
    _ids: dict[str, str] = field(default_factory=dict)

    def id(self, service: str) -> str | None:
        """The id of the compose container of ``service``, or None if there is none."""
        cached = self._ids.get(service)
        if cached:
            return cached
        done = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}",
                      "--filter", f"label={SERVICE_LABEL}={service}",
                      "--filter", "label=com.docker.compose.oneoff=False",
                      service=service, expected="its container listed", log=self.log_for(service))
        ids = done.stdout.split()
        if not ids:
            return None
        self._ids[service] = ids[0]
        return ids[0]

    def require(self, service: str) -> str:
        container = self.id(service)
        if container is None:
            raise LabError(service, "a container of this project", self.log_for(service), "compose made none")
        return container

    def forget(self, *services: str) -> None:
        for service in services:
            self._ids.pop(service, None)

    def listed(self) -> list[tuple[str, str]]:
        """(service, container id) of every container of the project, stopped ones included, by service."""
        done = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                      "--format", f'{{{{.Label "{SERVICE_LABEL}"}}}} {{{{.ID}}}}',
                      service=self.project, expected="its containers listed", check=False)
        return sorted(tuple(line.split()) for line in done.stdout.splitlines() if len(line.split()) == 2)

    def published_ports(self, service: str) -> dict[int, int]:
        """Each TCP port of the container that is published on the host: container port -> host port."""
        done = self.engine("inspect", "-f", "{{range $port, $binds := .NetworkSettings.Ports}}{{if $binds}}"
                           "{{$port}}={{(index $binds 0).HostPort}} {{end}}{{end}}", self.require(service),
                           service=service, expected="its published ports", check=False)
        ports = dict(pair.split("=", 1) for pair in done.stdout.split() if "=" in pair)
        return {int(port.split("/")[0]): int(host) for port, host in ports.items() if port.endswith("/tcp") and host}

    def logs(self, services: Iterable[str] | None = None) -> str:
        """Every container's log (or ``services``'), each line timestamped, a section per
        container: what ``compose logs -t`` shows, kept after the run, when the containers are gone."""
        wanted = None if services is None else set(services)
        sections = []
        for service, container in self.listed():
            if wanted is None or service in wanted:
                done = docker("logs", "-t", container, service=service, expected="its log", check=False,
                              timeout=60, merge_stderr=True)
                sections.append(f"== {service} ({container}) ==\n{done.stdout}")
        return "\n".join(sections)

    def remove(self, services: Iterable[str]) -> None:
        """Remove ``services``' containers and their anonymous volumes, running or not."""
        wanted = set(services)
        containers = [container for service, container in self.listed() if service in wanted]
        if containers:
            docker("rm", "-f", "-v", *containers, service=self.project, expected="its containers removed",
                   check=False, timeout=120)
        self.forget(*wanted)

    def state(self, service: str) -> tuple[bool, bool]:
        """(running, paused) as the engine reports them; a paused container still runs."""
        container = self.id(service)
        if container is None:
            return False, False
        done = docker("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", container, service=service,
                      expected="its state", log=self.log_for(service), check=False)
        if done.returncode != 0:
            self._ids.pop(service, None)
            return False, False
        running, paused = done.stdout.split()
        return running == "true", paused == "true"

    def engine(self, *args: str, service: str, expected: str, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess:
        return docker(*args, service=service, expected=expected, log=self.log_for(service), timeout=timeout,
                      check=check)

    # -- faults --------------------------------------------------------------------------------------
    def stop(self, service: str, timeout: int) -> None:
        """The image's stop signal, SIGKILL past the deadline."""
        container = self.require(service)
        if self.state(service)[1]:
            self.unpause(service)
        self.engine("stop", "-t", str(timeout), container, service=service, expected="to stop",
                    timeout=timeout + 30)
        self.wait_exited(service)

    def kill(self, service: str) -> None:
        """SIGKILL to the container's init: every process in it dies at once, a crash."""
        container = self.require(service)
        if self.state(service)[0]:
            self.engine("kill", "-s", "KILL", container, service=service, expected="to be killed")
        self.wait_exited(service)

    def wait_exited(self, service: str) -> None:
        wait_until(lambda: not self.state(service)[0], service=service, expected="its container to exit",
                   timeout=15, interval=0.1, log=self.log_for(service))

    def pause(self, service: str) -> None:
        """The cgroup freezer: every process stops at once, and the container still accepts TCP."""
        self.engine("pause", self.require(service), service=service, expected="to be paused")
        wait_until(lambda: self.state(service)[1], service=service, expected="its container to be paused",
                   timeout=5, interval=0.05, log=self.log_for(service))

    def unpause(self, service: str) -> None:
        if self.state(service)[1]:
            self.engine("unpause", self.require(service), service=service, expected="to be unpaused")

    def restart(self, service: str, timeout: int) -> None:
        """The image's stop signal, SIGKILL past ``timeout`` seconds, then a start."""
        self.engine("restart", "-t", str(timeout), self.require(service), service=service, expected="to restart",
                    timeout=timeout + 60)

    def start(self, service: str) -> None:
        """Start a stopped container (the caller waits until it answers its protocol)."""
        if not self.state(service)[0]:
            self.engine("start", self.require(service), service=service, expected="to start")

    def exec(self, service: str, *command: str, user: str | None = None, expected: str, timeout: float = 60,
             check: bool = True) -> subprocess.CompletedProcess:
        args = ["exec", *(["-u", user] if user else []), self.require(service), *command]
        return self.engine(*args, service=service, expected=expected, timeout=timeout, check=check)
