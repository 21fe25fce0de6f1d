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

    def partition(self, one: str, other: str) -> None:
        """Every link between the two services blackholed, both ways: a partition as far as the
        lab's links go (the connections stay open and hold what is sent, as TCP does)."""
        self.apply_to("blackhole", self.links_between(one, other), {})

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
        applied: list[Link] = []
        try:
            for link in links:
                applied.append(link)
                if action == "down":
                    self.client.set_enabled(link.name, False)
                for toxic in fault.toxics(parameters):
                    self.client.add_toxic(link.name, toxic["type"], toxic["attributes"], stream=toxic["stream"],
                                          name=toxic["name"])
        except LabError:
            for link in applied:
                self.heal(link)
            raise

    def heal(self, link: Link) -> None:
        state = self.client.proxies().get(link.name, {})
        for toxic in state.get("toxics", []):
            self.client.remove_toxic(link.name, toxic["name"])
        if not state.get("enabled", True):
            self.client.set_enabled(link.name, True)

    def heal_all(self) -> None:
        self.client.reset()

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
    return values


class LinkFaults:
    """What a lab whose links may go through a fault proxy offers: a network fault on one link."""

    name: str
    # The lab's fault proxy, if it serves the topology's links through one.
    fault_links: FaultLinks | None = None

    def require_fault_links(self) -> FaultLinks:
        if self.fault_links is None:
            raise LabError("network", f"network faults on the {self.name} lab", None,
                           "this lab does not serve its links through a fault proxy (the benchmark's lab has none)")
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
