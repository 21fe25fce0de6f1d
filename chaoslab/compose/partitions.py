"""Partitions between containers (chaoslab.partitions): each container's namespace is its
process's, entered with ``nsenter -t PID -n``. A container restarted by a scenario starts with
no rule; removing the project removes them all."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import LabError
from ..partitions import Partitions
from .cli import docker
from .containers import Containers


class ContainerPartitions(Partitions):
    """The partitions of one compose project: ``address`` gives a service's fixed address, ``ports``
    its container port, and ``compose_name`` its compose service's name where the harness names
    it otherwise."""

    def __init__(self, containers: Containers, address: Callable[[str], str], ports: dict[str, int],
                 compose_name: Callable[[str], str] = lambda service: service) -> None:
        super().__init__(address, ports)
        self.containers = containers
        self.compose_name = compose_name

    def _namespace(self, service: str) -> list[str]:
        name = self.compose_name(service)
        container = self.containers.require(name)
        done = docker("inspect", "-f", "{{.State.Pid}}", container, service=service, expected="its process id",
                      log=self.containers.log_for(name))
        pid = done.stdout.strip()
        if pid in ("", "0"):
            raise LabError(service, "a running container to cut off", self.containers.log_for(name),
                           "it is not running")
        return ["-t", pid, "-n"]

    def _log(self, service: str) -> str | None:
        return self.containers.log_for(self.compose_name(service))

    def _holds_rules(self, service: str) -> bool:
        return bool(self.containers.state(self.compose_name(service))[0])
