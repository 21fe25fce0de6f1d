"""Packet-level partitions, as Jepsen makes them: iptables DROP rules in the services' own
network namespaces.

Each service has a network namespace of its own (a container's on compose; one the run
creates on local processes, chaoslab.local.netns); a rule in one service's namespace drops
what it receives from another's address, so a partition between two services is a rule in
each (one way: a rule in the receiving side only). The rules sit in a chain of their own,
``CHAOSLAB``, jumped to first from INPUT, so that healing is flushing that chain and nothing
else of the namespace's rules is touched. They live and die with the namespace: removing
the run (at its end, after Ctrl-C or SIGTERM, or by the next run's reaper) removes every
rule.

Commands run in a namespace through the host's ``nsenter``: the host's iptables, bash and
timeout, whatever the service's image holds. The harness's own evidence is not cut: it
reaches the services from the host, through the network's gateway address, which no rule
names.
"""

from __future__ import annotations

import os
import shutil

from .compose.cli import run
from .errors import LabError

CHAIN = "CHAOSLAB"
# Where each table's chain is jumped to from: filter's drops what a service receives, nat's
# redirects what it connects to (``redirect``).
JUMPS = {"filter": (CHAIN, "INPUT"), "nat": ("CHAOSLAB_LINKS", "OUTPUT")}
DIRECTIONS = ("both", "from_first", "from_second")   # what is dropped: both ways, or one way only


class Partitions:
    """The partitions of one lab. A backend says where each service's namespace is
    (``_namespace``: nsenter's arguments), its address, its port and its log."""

    def __init__(self, address, ports: dict[str, int]) -> None:
        self.address = address   # service -> its address on the lab's network
        self.ports = ports       # each service's port there, for `reaches`
        self.cut: set[tuple[str, str]] = set()   # (receiver, sender) pairs with a rule

    # -- what a backend says -----------------------------------------------------------------
    def _namespace(self, service: str) -> list[str]:
        raise NotImplementedError

    def _log(self, service: str) -> str | None:
        return None

    def _holds_rules(self, service: str) -> bool:
        """Whether the service's namespace still exists (and so may hold rules to flush)."""
        return True

    # -- partitions -----------------------------------------------------------------------------
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

    def redirect(self, source: str, target: str, to) -> None:
        """``source``'s new TCP connections to ``target``'s address and port go to ``to`` (an
        Endpoint) instead: a DNAT rule in ``source``'s namespace. It serves a link through the
        fault proxy for a client that connects to addresses it learns rather than to one it is
        given (a Sentinel: the replicas' come from the master's INFO), and only that client's
        connections: the target's other clients are not redirected. It is not a fault, so
        ``heal`` leaves it; it goes with the namespace."""
        chain, _ = JUMPS["nat"]
        rule = ["-p", "tcp", "-d", self.address(target), "--dport", str(self.ports[target]), "-j", "DNAT",
                "--to-destination", str(to)]
        # Once only: a namespace that already has it (a baseline that routes again) keeps it.
        if not self._iptables(source, "-C", chain, *rule, table="nat", check=False,
                              expected=f"its redirection to {target} looked up"):
            self._iptables(source, "-A", chain, *rule, table="nat",
                           expected=f"its connections to {target} redirected to {to}")

    def heal(self) -> None:
        """Every rule gone, from every namespace that still exists (the others took theirs along)."""
        for receiver in sorted({receiver for receiver, _ in self.cut}):
            if self._holds_rules(receiver):
                self._iptables(receiver, "-F", CHAIN, expected="its partition rules flushed")
        self.cut.clear()

    def reaches(self, source: str, target: str, timeout_s: int = 2) -> bool:
        """Whether a TCP connection from inside ``source``'s namespace to ``target``'s address and
        port opens within ``timeout_s`` (a dropped SYN, or SYN-ACK, never opens)."""
        address, port = self.address(target), self.ports[target]
        done = run(["nsenter", *self._namespace(source), "timeout", str(timeout_s), "bash", "-c",
                    f"exec 3<>/dev/tcp/{address}/{port}"], service=source, expected=f"a connection to {target}",
                   log=self._log(source), timeout=timeout_s + 30, check=False)
        return done.returncode == 0

    def _iptables(self, service: str, *rule: str, expected: str, table: str = "filter", check: bool = True) -> bool:
        """One iptables command in ``service``'s namespace, its table's chain created first if
        need be; whether it succeeded (``check``: a failure is an error)."""
        if os.geteuid() != 0 or not shutil.which("nsenter") or not shutil.which("iptables"):
            raise LabError(service, f"{expected} (iptables rules in its network namespace)",
                           cause="it needs root, nsenter (util-linux) and iptables on the host: run as root, "
                                 "`apt-get install -y iptables util-linux`")
        enter = ["nsenter", *self._namespace(service), "iptables", "-w", "5", "-t", table]
        log = self._log(service)
        # The table's chain, once per namespace, first in the chain it hangs from.
        chain, parent = JUMPS[table]
        if run([*enter, "-n", "-L", chain], service=service, expected="its chain listed", log=log,
               check=False).returncode != 0:
            run([*enter, "-N", chain], service=service, expected=f"the {chain} chain created", log=log)
            run([*enter, "-I", parent, "1", "-j", chain], service=service, expected=f"{parent} to jump to {chain}",
                log=log)
        return run([*enter, *rule], service=service, expected=expected, log=log, check=check).returncode == 0
