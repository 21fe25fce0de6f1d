"""Network faults: the links of the topology, as data, and what each fault does to a link.

A link is one client's connections to one service (the API's to Redis, ...). A backend
that can fault a link serves it through a fault proxy (``chaoslab.faultproxy``, with
Toxiproxy's HTTP API): the client is pointed at the proxy, the proxy at the service, and a
fault is a set of Toxiproxy toxics on it, added and removed at run time. Evidence never
goes through a link: the harness reaches every service directly.

A fault aimed at a service acts on every link into it (its whole traffic, as far as the
lab routes it through links).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from .errors import LabError
from .faultproxy.client import ToxiproxyClient
from .phases import phase
from .topology import API, HAPROXY, PRIMARY, REDIS, REPLICA, Endpoint


@dataclass(frozen=True)
class Link:
    source: str
    target: str

    @property
    def name(self) -> str:
        """Its proxy's name (Toxiproxy's names are letters, digits, - and _)."""
        return f"{self.source}_to_{self.target}".replace("-", "_")

    def __str__(self) -> str:
        return f"{self.source} → {self.target}"


# The links a backend serves through its fault proxy: the API's to Redis, to HAProxy (its
# writes) and to the replica (its reads), replication (the replica's walreceiver connects
# to the primary, so the WAL flows downstream), and HAProxy's to each node (its checks and
# the sessions it forwards). Next (issue 14): the bonus topologies' own links.
LINKS = (Link(API, REDIS), Link(API, HAPROXY), Link(API, REPLICA), Link(REPLICA, PRIMARY),
         Link(HAPROXY, PRIMARY), Link(HAPROXY, REPLICA))


@dataclass(frozen=True)
class NetworkFault:
    """A fault on a link: its description (in French, for the report) and its toxics."""

    description: str
    toxics: Callable[[dict[str, int]], list[dict]]
    parameters: tuple[str, ...] = ()   # the first one, if any, is required


def _both_ways(kind: str, attributes: dict[str, int]) -> list[dict]:
    return [{"name": f"chaoslab_{kind}_{stream}", "type": kind, "stream": stream, "attributes": attributes}
            for stream in ("upstream", "downstream")]


# By name, as `python -m chaoslab fault NAME SERVICE` and `Cluster.fault` take them; `heal`
# removes them all. Latency and bandwidth act on what the service sends back (Toxiproxy's
# default stream): a request's round trip grows by the latency once.
NETWORK_FAULTS = {
    "latency": NetworkFault(
        "latence ajoutée à chaque réponse du service (ms, ± gigue)",
        lambda p: [{"name": "chaoslab_latency", "type": "latency", "stream": "downstream",
                    "attributes": {"latency": p["ms"], "jitter": p.get("jitter_ms", 0)}}],
        ("ms", "jitter_ms")),
    "bandwidth": NetworkFault(
        "débit limité (KB/s) dans les deux sens",
        lambda p: _both_ways("bandwidth", {"rate": p["kbps"]}), ("kbps",)),
    "blackhole": NetworkFault(
        "les connexions s'ouvrent, rien ne passe dans aucun sens ni n'est perdu (partition silencieuse)",
        lambda p: _both_ways("timeout", {"timeout": 0})),
    "reset": NetworkFault(
        "chaque connexion est réinitialisée (TCP RST), les nouvelles aussi",
        lambda p: [{"name": "chaoslab_reset", "type": "reset_peer", "stream": "downstream",
                    "attributes": {"timeout": 0}}]),
    "down": NetworkFault("connexions fermées, et refusées tant que le lien est coupé", lambda p: []),
    "slow_close": NetworkFault(
        "la fermeture d'une connexion par le service arrive au client N ms plus tard",
        lambda p: [{"name": "chaoslab_slow_close", "type": "slow_close", "stream": "downstream",
                    "attributes": {"delay": p["ms"]}}], ("ms",)),
    "limit_data": NetworkFault(
        "chaque connexion est fermée une fois N octets reçus du service",
        lambda p: [{"name": "chaoslab_limit_data", "type": "limit_data", "stream": "downstream",
                    "attributes": {"bytes": p["bytes"]}}], ("bytes",)),
}
HEAL = "heal"
PARTITION = "partition"   # between two services: `fault partition db-primary db-replica`


class FaultLinks:
    """A lab's links (``links``: its topology's), served by one fault proxy (its Toxiproxy API
    at ``client.url``)."""

    def __init__(self, client: ToxiproxyClient, listen: dict[str, Endpoint], log: str,
                 links: tuple[Link, ...] = LINKS) -> None:
        self.client = client
        self.listen = listen   # link name -> where its source connects
        self.log = log
        self.links = links

    def endpoint_for(self, source: str, target: str) -> Endpoint | None:
        return self.listen.get(Link(source, target).name)

    def create(self, link: Link, listen: Endpoint, upstream: Endpoint) -> None:
        self.client.create_proxy(link.name, str(listen), str(upstream))
        self.listen[link.name] = listen

    def remove(self, link: Link) -> None:
        """Its proxy gone from the fault proxy (a group that stops before the lab does)."""
        self.client.delete_proxy(link.name)
        self.listen.pop(link.name, None)

    def links_of(self, service: str) -> list[Link]:
        return self._served(lambda link: service in (link.source, link.target),
                            f"a link to or from {service} to fault")

    def links_between(self, one: str, other: str) -> list[Link]:
        return self._served(lambda link: {link.source, link.target} == {one, other},
                            f"a link between {one} and {other} to cut")

    def _served(self, wanted, expected: str) -> list[Link]:
        served = [link for link in self.links if link.name in self.listen]
        links = [link for link in served if wanted(link)]
        if not links:
            raise LabError("network", f"{expected} (the links served here: "
                                      f"{', '.join(str(link) for link in served) or 'none'})", self.log)
        return links

    def partition(self, one: str, other: str, direction: str = "both", links: list[Link] | None = None) -> None:
        """Every link between the two services blackholed (the connections stay open and hold what
        is sent, as TCP does): both ways, or only what ``one`` sends (``from_first``) or what
        ``other`` sends (``from_second``)."""
        links = self.links_between(one, other) if links is None else links
        if direction == "both":
            self.apply_to("blackhole", links, {})
            return
        sender = one if direction == "from_first" else other

        def what_the_sender_sends(link: Link) -> list[dict]:
            # Upstream is what the link's client sends; downstream what its service answers.
            stream = "upstream" if link.source == sender else "downstream"
            return [{"type": "timeout", "attributes": {"timeout": 0}, "stream": stream,
                     "name": f"chaoslab_timeout_{stream}"}]

        self._apply(links, what_the_sender_sends)

    def served_between(self, one: str, other: str) -> list[Link]:
        """The links served between two services, maybe none."""
        return [link for link in self.links if link.name in self.listen and {link.source, link.target} == {one, other}]

    def apply(self, action: str, service: str, parameters: dict[str, int]) -> None:
        """The fault on every link of ``service``."""
        self.apply_to(action, self.links_of(service), parameters)

    def apply_to(self, action: str, links: list[Link], parameters: dict[str, int]) -> None:
        """The fault on each of ``links``; if one fails half-way, what was applied is removed
        again, so that a failed fault leaves nothing behind."""
        for link in links:
            if link.name not in self.listen:
                raise LabError("network", f"the link {link} to be served through the fault proxy", self.log,
                               "this lab does not serve it")
        if action == HEAL:
            for link in links:
                self.heal(link)
            return
        fault = NETWORK_FAULTS[action]
        self._apply(links, lambda link: fault.toxics(parameters), disable=action == "down")

    def _apply(self, links: list[Link], toxics_of, disable: bool = False) -> None:
        """``toxics_of(link)``'s toxics on each link (and the link disabled, for ``down``); if
        one fails half-way, what was applied is removed again."""
        applied: list[Link] = []
        try:
            for link in links:
                applied.append(link)
                if disable:
                    self.client.set_enabled(link.name, False)
                for toxic in toxics_of(link):
                    self.client.add_toxic(link.name, toxic["type"], toxic["attributes"], stream=toxic["stream"],
                                          name=toxic["name"])
        except LabError:
            for link in applied:
                self.heal(link)
            raise

    def heal(self, link: Link, state: dict | None = None) -> None:
        state = self.client.proxies().get(link.name, {}) if state is None else state
        for toxic in state.get("toxics", []):
            self.client.remove_toxic(link.name, toxic["name"])
        if not state.get("enabled", True):
            self.client.set_enabled(link.name, True)

    def heal_all(self) -> None:
        """Every fault on these links gone, and on no other: one fault proxy may serve the links
        of two labs (the Sentinel group's beside the brief's)."""
        states = self.client.proxies()
        for link in self.links:
            if link.name in states:
                self.heal(link, states[link.name])

    def active(self) -> dict[str, list[str]]:
        """Each link that has a fault: its toxics, as `type stream attributes`, and `down`."""
        faults = {}
        for name, state in self.client.proxies().items():
            lines = [] if state.get("enabled", True) else ["down"]
            lines += [f"{t['type']} {t['stream']} " + " ".join(f"{k}={v}" for k, v in t["attributes"].items())
                      for t in state.get("toxics", [])]
            if lines:
                faults[name] = lines
        return faults


def parameters_for(action: str, given: dict[str, int | None]) -> dict[str, int]:
    """The fault's parameters, checked: each one it needs present, whole and within sense."""
    if action == HEAL:
        return {}
    fault = NETWORK_FAULTS[action]
    values = {key: value for key, value in given.items() if value is not None and key in fault.parameters}
    needed = fault.parameters[0] if fault.parameters else None
    if needed and needed not in values:
        raise ValueError(f"fault {action} needs --{needed.replace('_', '-')} (e.g. --{needed} 200)")
    for key, value in values.items():
        if not isinstance(value, int) or value < 0 or value > 600_000:
            raise ValueError(f"fault {action}: --{key.replace('_', '-')} {value}; expected a whole number "
                             f"from 0 to 600000")
    if action == "bandwidth" and values["kbps"] == 0:
        raise ValueError("fault bandwidth: --kbps 0 lets nothing through; say `blackhole` for that")
    if action == "limit_data" and values["bytes"] == 0:
        raise ValueError("fault limit_data: --bytes 0 closes every connection at once; say `down` for that")
    return values


PARTITION_DIRECTIONS = ("both", "from_first", "from_second")
# What a client says first in each protocol, so that an answer proves the path carries data
# both ways (a proxy accepts a connection even when its link holds everything).
FIRST_WORDS = {
    "postgresql": b"\x00\x00\x00\x08\x04\xd2\x16\x2f",   # an SSLRequest: answered with one byte, N or S
    "redis": b"PING\r\n",
    "http": b"GET /version HTTP/1.0\r\n\r\n",
}
PROBE_TIMEOUT_S = 1.0


def answers_through(endpoint: Endpoint, protocol: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the server at ``endpoint`` answers ``protocol``'s first words within ``timeout``."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(FIRST_WORDS[protocol])
            return bool(sock.recv(1))
    except OSError:
        return False


class LinkFaults:
    """What a lab whose links may go through a fault proxy offers: network faults on its links,
    and partitions between its services."""

    name: str
    # The lab's fault proxy, if it serves the topology's links through one.
    fault_links: FaultLinks | None = None
    # Packet-level partitions (iptables rules in the services' own network namespaces), where
    # the backend can make them (chaoslab.compose.partitions).
    partitions = None
    # Why a lab without a fault proxy has none, for the error that says so.
    no_links_reason = "this lab does not serve its links through a fault proxy (the benchmark's lab has none)"

    def partition(self, one: str, other: str, direction: str = "both") -> None:
        """``one`` and ``other`` stop hearing each other by any path (``both``), or only what
        ``one`` sends is lost (``from_first``), or only what ``other`` sends (``from_second``).

        Packets between them are dropped where the backend can (compose: iptables), and every
        link between them served through the fault proxy is blackholed too, since a proxied
        connection goes round such rules. Where the backend drops no packet (local processes
        share one address), the links are the partition: it reaches as far as they go."""
        if direction not in PARTITION_DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; known: {', '.join(PARTITION_DIRECTIONS)}")
        with phase("fault"):
            links = self.fault_links.served_between(one, other) if self.fault_links is not None else []
            if self.partitions is None:
                self.require_fault_links().partition(one, other, direction)   # says which links there are
                return
            self.partitions.drop(one, other, direction)
            if links:
                try:
                    self.fault_links.partition(one, other, direction, links)
                except LabError:
                    self.partitions.undo(one, other, direction)   # this partition only
                    raise

    def reaches(self, source: str, target: str) -> bool:
        """Whether ``source`` can talk to ``target`` now, by the path the lab gives it: evidence
        from the network, not from either service. Where packets can be dropped, the backend
        asks from inside ``source`` (compose: a connection from its container), and the pair's
        link, if it has one, must carry the target's answer; else the path is the pair's link
        (or the target itself), probed with the target's protocol."""
        if self.partitions is None:
            return answers_through(self.path(source, target), self.protocol(source, target))
        if not self.partitions.reaches(source, target):
            return False
        # A connection through the pair's link opens even when the link holds everything: the
        # link must carry the target's answer too.
        linked = self.fault_links.endpoint_for(source, target) if self.fault_links is not None else None
        return linked is None or answers_through(linked, self.protocol(source, target))

    def protocol(self, source: str, target: str) -> str:
        """What ``source`` speaks to ``target`` (a key of FIRST_WORDS)."""
        return {REDIS: "redis", "etcd": "http"}.get(target, "postgresql")

    def path(self, source: str, target: str) -> Endpoint:
        """Where ``source`` connects to reach ``target``: its link's proxy, or ``target`` itself."""
        linked = self.fault_links.endpoint_for(source, target) if self.fault_links is not None else None
        return linked or self.endpoint(target)

    def heal_network(self) -> None:
        """Every network fault gone: the links' toxics and the partitions' rules."""
        if self.fault_links is not None:
            self.fault_links.heal_all()
        if self.partitions is not None:
            self.partitions.heal()

    def require_fault_links(self) -> FaultLinks:
        if self.fault_links is None:
            raise LabError("network", f"network faults on the {self.name} lab", None, self.no_links_reason)
        return self.fault_links

    def fault_network(self, action: str, service: str, **parameters: int) -> None:
        """A network fault (NETWORK_FAULTS, ``heal``) on every link into or out of ``service``."""
        with phase("fault"):
            self.require_fault_links().apply(action, service, parameters_for(action, parameters))

    def fault_link(self, action: str, source: str, target: str, **parameters: int) -> None:
        """A network fault (NETWORK_FAULTS, ``heal``) on one link only: ``source``'s connections
        to ``target`` (db-replica to db-primary is replication)."""
        with phase("fault"):
            self.require_fault_links().apply_to(action, [Link(source, target)], parameters_for(action, parameters))
