"""Packet-level partitions between containers, as Jepsen makes them: iptables DROP rules.

Each container has a network namespace of its own; a rule in one container's namespace
drops what it receives from another's address, so a partition between two containers is
a rule in each (one way: a rule in the receiving side only). The rules sit in a chain of
their own, ``CHAOSLAB``, jumped to first from INPUT, so that healing is flushing that chain
and nothing else of the container's rules is touched. They live and die with the
namespace: removing the project (at the end of a run, after Ctrl-C, or by the reaper of
the next run) removes every rule; a container restarted by a scenario starts with none.

The harness's own evidence is not cut: it reaches the containers from the host, through
the network's gateway address, which no rule names.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from ..errors import LabError
from .cli import docker, run
from .containers import Containers

CHAIN = "CHAOSLAB"
DIRECTIONS = ("both", "from_first", "from_second")   # what is dropped: both ways, or one way only


class ContainerPartitions:
    """The partitions of one compose project: ``address`` gives a service's fixed address, ``ports``
    its container port, and ``compose_name`` its compose service's name where the harness names
    it otherwise."""

    def __init__(self, containers: Containers, address: Callable[[str], str], ports: dict[str, int],
                 compose_name: Callable[[str], str] = lambda service: service) -> None:
        self.containers = containers
        self.address = address
        self.ports = ports   # each service's container port, for `reaches`
        self.compose_name = compose_name
        self.cut: set[tuple[str, str]] = set()   # (receiver, sender) pairs with a rule

    def drop(self, one: str, other: str, direction: str = "both") -> None:
        """``one`` and ``other`` stop hearing each other (``both``), or only the second stops
        hearing the first (``from_first``), or the first the second (``from_second``)."""
        done: list[tuple[str, str]] = []
        try:
            for receiver, sender in self._pairs(one, other, direction):
                self._iptables(receiver, "-A", CHAIN, *self._rule(sender),
                               expected=f"a rule dropping what comes from {sender}")
                done.append((receiver, sender))
                self.cut.add((receiver, sender))
        except LabError:
            self._remove(done)   # a partition that fails half-way is rolled back
            raise

    def undo(self, one: str, other: str, direction: str = "both") -> None:
        """Remove the rules of one ``drop`` (and no other partition's)."""
        self._remove([pair for pair in self._pairs(one, other, direction) if pair in self.cut])

    @staticmethod
    def _pairs(one: str, other: str, direction: str) -> list[tuple[str, str]]:
        """(receiver, sender) pairs: who drops what whom sends."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
        return {"both": [(one, other), (other, one)], "from_first": [(other, one)],
                "from_second": [(one, other)]}[direction]

    def _rule(self, sender: str) -> list[str]:
        return ["-s", self.address(sender), "-j", "DROP"]

    def _remove(self, pairs: list[tuple[str, str]]) -> None:
        for receiver, sender in pairs:
            self._iptables(receiver, "-D", CHAIN, *self._rule(sender), expected=f"its rule against {sender} removed")
            self.cut.discard((receiver, sender))

    def heal(self) -> None:
        """Every rule gone, from every container that still runs (the others took theirs along)."""
        for receiver in sorted({receiver for receiver, _ in self.cut}):
            if self.containers.state(self.compose_name(receiver))[0]:
                self._heal(receiver)
        self.cut.clear()

    def reaches(self, source: str, target: str, timeout_s: int = 2) -> bool:
        """Whether a TCP connection from inside ``source``'s container to ``target``'s address and
        port opens within ``timeout_s`` (a dropped SYN, or SYN-ACK, never opens). The source's
        image needs bash and timeout (etcd's distroless image has neither: it is only a target)."""
        address, port = self.address(target), self.ports[target]
        done = self.containers.exec(self.compose_name(source), "timeout", str(timeout_s), "bash", "-c",
                                    f"exec 3<>/dev/tcp/{address}/{port}", expected=f"a connection to {target}",
                                    timeout=timeout_s + 30, check=False)
        return done.returncode == 0

    def _heal(self, receiver: str) -> None:
        self._iptables(receiver, "-F", CHAIN, expected="its partition rules flushed")
        self.cut = {pair for pair in self.cut if pair[0] != receiver}

    def _iptables(self, service: str, *rule: str, expected: str) -> None:
        if os.geteuid() != 0 or not shutil.which("nsenter") or not shutil.which("iptables"):
            raise LabError(service, f"{expected} (a packet-level partition)",
                           cause="it needs root, nsenter (util-linux) and iptables on the host: run as root, "
                                 "`apt-get install -y iptables util-linux`")
        pid = self._namespace_pid(self.compose_name(service))
        enter = ["nsenter", "-t", pid, "-n", "iptables", "-w", "5"]
        log = self.containers.log_for(self.compose_name(service))
        # The chain, once per namespace, first in INPUT.
        if run([*enter, "-n", "-L", CHAIN], service=service, expected="its chain listed", log=log,
               check=False).returncode != 0:
            run([*enter, "-N", CHAIN], service=service, expected=f"the {CHAIN} chain created", log=log)
            run([*enter, "-I", "INPUT", "1", "-j", CHAIN], service=service, expected=f"INPUT to jump to {CHAIN}",
                log=log)
        run([*enter, *rule], service=service, expected=expected, log=log)

    def _namespace_pid(self, service: str) -> str:
        container = self.containers.require(service)
        done = docker("inspect", "-f", "{{.State.Pid}}", container, service=service, expected="its process id",
                      log=self.containers.log_for(service))
        pid = done.stdout.strip()
        if pid in ("", "0"):
            raise LabError(service, "a running container to cut off", self.containers.log_for(service),
                           "it is not running")
        return pid
