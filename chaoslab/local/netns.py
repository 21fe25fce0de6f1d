"""Network namespaces for the local backend's servers: an address of their own each, so that
a partition between two of them is packet-level, as on compose or in Jepsen.

Local processes otherwise all share 127.0.0.1, where no rule can tell the replica's packets
from the API's. Here each server runs in a namespace of its own (``nsenter --net``), with one
interface on a bridge; the bridge lives in a namespace of its own too (the run's "switch"),
and the host has one leg on it, the gateway address, from which the harness, the API and the
fault proxy reach every server. Nothing is added to the host's firewall: traffic between two
servers is bridged inside the switch's namespace, whose firewall is empty (the host's, where
Docker sets FORWARD to DROP, never sees it), and a partition is iptables DROP rules inside the
servers' own namespaces (chaoslab.partitions).

Everything of a run is named after it (``chaoslab-<run>-<server>``), so that removing the run,
at its end, after Ctrl-C or SIGTERM, or by the next run's reaper when it was killed, deletes
its namespaces; the veth pairs and the bridge go with them.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError
from ..partitions import Partitions

PREFIX = "chaoslab-"
SWITCH = "switch"
NETNS_DIR = Path("/run/netns")
# Candidate subnets: 10.213.0.0/16 cut in /24s; one is taken if any route of the host (another
# run's gateway included) overlaps it.
CANDIDATE_SPACE = ipaddress.ip_network("10.213.0.0/16")
FIRST_HOST = 10   # servers get .10, .11... in the order given; the gateway is .1


def unavailable_reason() -> str | None:
    """Why this machine cannot give the servers namespaces of their own, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for program in ("ip", "nsenter", "iptables"):
        if shutil.which(program) is None:
            return f"the program {program} is missing (apt-get install -y iproute2 util-linux iptables)"
    return None


def _ip(*args: str, expected: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise LabError("network", expected, cause=f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def namespaces_of(run_id: str) -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(f"{PREFIX}{run_id}-")]


def remove_namespaces(run_id: str) -> None:
    """Every namespace of a run, and with them its veths and bridge (idempotent)."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        return
    for name in namespaces_of(run_id):
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def free_subnet(routes: str) -> ipaddress.IPv4Network:
    """The first /24 of CANDIDATE_SPACE that no route of ``routes`` (``ip -4 route show table
    all``) overlaps; the default route is no claim on any subnet."""
    taken = []
    for line in routes.splitlines():
        words = line.split()
        if not words:
            continue
        word = words[1] if words[0] in ("local", "broadcast", "unreachable", "blackhole", "prohibit") else words[0]
        try:
            network = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue   # "default" and the like
        if network.prefixlen > 0:
            taken.append(network)
    for subnet in CANDIDATE_SPACE.subnets(new_prefix=24):
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise LabError("network", f"a free /24 in {CANDIDATE_SPACE} for the lab's servers",
                   cause="every one overlaps a route of this host")


@dataclass
class NodeNetwork:
    """The namespaces of one run: ``servers`` each with an address on ``subnet``."""

    run_id: str
    subnet: ipaddress.IPv4Network
    servers: tuple[str, ...]

    @classmethod
    def create(cls, run_id: str, servers: tuple[str, ...], lock_dir: Path) -> "NodeNetwork":
        reason = unavailable_reason()
        if reason:
            raise LabError("network", "network namespaces for the lab's servers", cause=reason)
        # Two runs starting together (pytest-xdist workers) must not pick the same subnet: the
        # pick and the gateway's address, which marks it taken, happen under one lock.
        with open(lock_dir / "netns.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            network = cls(run_id, cls._free_subnet(), servers)
            try:
                network._build()
            except BaseException:
                remove_namespaces(run_id)
                raise
        return network

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        return free_subnet(_ip("-4", "route", "show", "table", "all", expected="the host's routes"))

    # -- names and addresses ------------------------------------------------------------
    def namespace(self, server: str) -> str:
        return f"{PREFIX}{self.run_id}-{server}"

    @property
    def gateway(self) -> str:
        """The host's address on the bridge: where the servers reach the host's processes."""
        return str(self.subnet.network_address + 1)

    def address(self, server: str) -> str:
        return str(self.subnet.network_address + FIRST_HOST + self.servers.index(server))

    def enter(self, server: str) -> list[str]:
        """nsenter's arguments that put a command in ``server``'s namespace."""
        return [f"--net={NETNS_DIR / self.namespace(server)}"]

    def remove(self) -> None:
        remove_namespaces(self.run_id)

    # -- creation --------------------------------------------------------------------------
    def _build(self) -> None:
        switch = self.namespace(SWITCH)
        host_leg = f"clh{self.run_id[-6:]}"   # interface names: 15 characters at most
        _ip("netns", "add", switch, expected="the run's switch namespace")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge", expected="a bridge in the switch")
        _ip("-n", switch, "link", "set", "br0", "up", expected="the bridge up")
        _ip("link", "add", host_leg, "type", "veth", "peer", "name", "host", "netns", switch,
            expected="the host's leg on the bridge")
        _ip("-n", switch, "link", "set", "host", "master", "br0", "up", expected="the host's leg bridged")
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", host_leg, expected="the gateway address")
        _ip("link", "set", host_leg, "up", expected="the host's leg up")
        for index, server in enumerate(self.servers):
            self._plug(index, server)

    def add(self, servers: tuple[str, ...]) -> None:
        """More servers on the run's bridge (a bonus topology started beside the lab), each with
        the next address; a server that already has its namespace keeps it."""
        for server in servers:
            if server not in self.servers:
                self.servers = (*self.servers, server)
                self._plug(len(self.servers) - 1, server)

    def _plug(self, index: int, server: str) -> None:
        """``server``'s namespace, its interface bridged in the switch, its address up."""
        switch, namespace = self.namespace(SWITCH), self.namespace(server)
        _ip("netns", "add", namespace, expected=f"a namespace for {server}")
        _ip("-n", switch, "link", "add", f"s{index}", "type", "veth", "peer", "name", "eth0", "netns", namespace,
            expected=f"{server}'s interface")
        _ip("-n", switch, "link", "set", f"s{index}", "master", "br0", "up", expected=f"{server} bridged")
        _ip("-n", namespace, "addr", "add", f"{self.address(server)}/{self.subnet.prefixlen}", "dev", "eth0",
            expected=f"{server}'s address")
        _ip("-n", namespace, "link", "set", "eth0", "up", expected=f"{server}'s interface up")
        _ip("-n", namespace, "link", "set", "lo", "up", expected=f"{server}'s loopback up")


class NamespacePartitions(Partitions):
    """Partitions between the namespaced servers of one local run (chaoslab.partitions)."""

    def __init__(self, network: NodeNetwork, ports: dict[str, int], log_for) -> None:
        super().__init__(network.address, ports)
        self.network = network
        self.log_for = log_for

    def _namespace(self, service: str) -> list[str]:
        if service not in self.network.servers:
            raise LabError(service, "a network namespace of its own, to cut it off", None,
                           f"on local processes only {', '.join(self.network.servers)} have one")
        return self.network.enter(service)

    def _log(self, service: str) -> str | None:
        try:
            return str(self.log_for(service))
        except KeyError:
            return None
