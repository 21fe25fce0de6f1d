"""The fault proxy as a service of a run's compose project (``faultproxy`` in docker-compose.yml).

It runs in the API's image, on a fixed address of the run's network, with one port per
link there (chaoslab.network); the harness reaches its Toxiproxy API through a published
port of 127.0.0.1, and each link's client (a container, or the API on the host, which
routes to the network's addresses) connects to the proxy's address and the link's port.
"""

from __future__ import annotations

from ..faultproxy.client import ToxiproxyClient
from ..network import FaultLinks, Link
from ..topology import Endpoint
from .probe import Probe
from .project import LabNetwork
from .stack import ComposeStack

SERVICE, PROFILE = "faultproxy", "faults"
API_PORT_VARIABLE = "FAULTPROXY_PORT"   # where the compose file publishes its API (8474 in the container)
FIRST_LINK_PORT = 10001


def plan(network: LabNetwork, links: tuple[Link, ...], ports: dict[str, int],
         services: dict[str, str] | None = None) -> dict[Link, tuple[Endpoint, Endpoint]]:
    """Each link's (listen, upstream): the proxy's address and a port of the link's own, and the
    target's fixed address and container port (``ports``, by the harness's service name;
    ``services`` maps those names to compose's where they differ)."""
    services = services or {}
    proxy = network.address(SERVICE)
    return {link: (Endpoint(proxy, FIRST_LINK_PORT + number),
                   Endpoint(network.address(services.get(link.target, link.target)), ports[link.target]))
            for number, link in enumerate(links)}


def start(stack: ComposeStack, api: Endpoint, planned: dict[Link, tuple[Endpoint, Endpoint]],
          links: tuple[Link, ...], with_services: tuple[str, ...] = ()) -> FaultLinks:
    """Start the service, then create every planned link. Its clients start after it; only
    ``with_services``, which reach nothing through it, start in the same compose command
    (the caller waits for them)."""
    stack.run("up", "-d", "--no-deps", SERVICE, *with_services, service=SERVICE,
              expected="`up -d` to start the fault proxy", timeout=180)
    log = stack.log_hint(SERVICE)
    client = ToxiproxyClient(f"http://{api}", log)
    stack.wait_ready(SERVICE, Probe(client.answers, f"its Toxiproxy API to answer on {client.url}"), log=log)
    fault_links = FaultLinks(client, {}, log, links)
    for link, (listen, upstream) in planned.items():
        fault_links.create(link, listen, upstream)
    return fault_links
