"""The Redis Sentinel group (bonus) in containers: profile ``sentinel`` of docker-compose.yml.

One master, one replica, three Sentinels (a quorum of two) with the lab's timings
(chaoslab/redis_ha.py), as a stack beside the brief's (compose/stack.py): services
of the run's own compose project, on its network and fixed addresses. Every member
announces its container address: that is what a Sentinel hands out for the master,
and the API, which runs on the host, connects to it directly (Linux routes to a
bridge network's addresses). The harness reaches every member through a published
port of 127.0.0.1, and the API finds the Sentinels there. A member can be cut from
another by packets dropped in their containers (chaoslab.partitions).
"""

from __future__ import annotations

from collections.abc import Callable

from .. import redis_probe
from ..network import FaultLinks
from ..redis_ha import MASTER_NAME, SENTINEL_TIMINGS, RedisHA
from ..topology import Endpoint
from ..waits import wait_until
from . import faultproxy
from .partitions import ContainerPartitions
from .probe import pong
from .stack import ComposeStack

PROFILE = "sentinel"
NODES = ("redis-ha-1", "redis-ha-2")
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
REDIS_PORT = 6379
SENTINEL_PORT = 26379
STOP_TIMEOUT = 10
# The Sentinels' links listen on the fault proxy's address from this port on (the lab's own
# links take the ports from chaoslab.compose.faultproxy.FIRST_LINK_PORT).
FIRST_LINK_PORT = faultproxy.FIRST_LINK_PORT + 100


def _variable(service: str, what: str) -> str:
    """The compose file's variable for a member's published port or address: redis-ha-1 -> REDIS_HA_1_PORT."""
    return f"{service.upper().replace('-', '_')}_{what}"


class ComposeRedisHA(RedisHA):
    """The Sentinel group beside the brief's stack, in the same compose project."""

    def __init__(self, stack: ComposeStack, lab_links: FaultLinks | None = None) -> None:
        """``lab_links``: the lab's fault proxy (a service of the same project), which then serves
        the Sentinels' links to the nodes."""
        self.lab_links = lab_links
        self.stack = stack.beside(PROFILE)
        self.nodes = {name: self.stack.reserve_endpoint() for name in NODES}
        self.sentinels = {name: self.stack.reserve_endpoint() for name in SENTINELS}
        self.partitions = ContainerPartitions(self.stack.containers, lambda name: self.stack.network.address(name),
                                              {**dict.fromkeys(NODES, REDIS_PORT),
                                               **dict.fromkeys(SENTINELS, SENTINEL_PORT)})

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.stack.write_files([*NODES, *SENTINELS], self._variables())
        with self.stack.closed_on_failure():
            # The replica first: a Sentinel learns the replicas from the master's INFO, which it
            # asks at once when it connects, then only every 10 s.
            self.stack.run("up", "-d", "--no-deps", *NODES, service="redis-sentinel",
                           expected="`up -d` to start the Sentinel group's Redis servers", timeout=180)
            for name in NODES:
                self._wait_ready(name)
            wait_until(lambda: self.replica_linked(NODES[1]), service=NODES[1],
                       expected=f"to replicate {NODES[0]}", timeout=30, interval=0.1, log=self.log_path(NODES[1]))
            self.stack.run("up", "-d", "--no-deps", *SENTINELS, service="redis-sentinel",
                           expected="`up -d` to start the Sentinels", timeout=180)
            for name in SENTINELS:
                self._wait_ready(name)
            self.wait_settled()
            self._wait_sentinels_know_the_group()
            if self.lab_links is not None:
                address = self.stack.network.address
                self.serve_sentinel_links(
                    self.lab_links,
                    {link: Endpoint(address(faultproxy.SERVICE), FIRST_LINK_PORT + number)
                     for number, link in enumerate(self.sentinel_links())},
                    {name: Endpoint(address(name), REDIS_PORT) for name in NODES})

    def _variables(self) -> dict[str, str]:
        address = self.stack.network.address
        env = {"SENTINEL_DOWN_AFTER_MS": str(SENTINEL_TIMINGS["down_after_ms"]),
               "SENTINEL_FAILOVER_TIMEOUT_MS": str(SENTINEL_TIMINGS["failover_timeout_ms"])}
        for name, endpoint in {**self.nodes, **self.sentinels}.items():
            env[_variable(name, "PORT")] = str(endpoint.port)
            env[_variable(name, "ADDRESS")] = address(name)
        return env

    def _wait_sentinels_know_the_group(self, timeout: float = 30) -> None:
        """A Sentinel that knows no other cannot get a majority to fail over, and one that knows no
        replica has nothing to promote ("-failover-abort-no-good-slave"): wait until each knows both."""
        def all_known() -> bool:
            for endpoint in self.sentinel_endpoints():
                client = redis_probe.client(endpoint)
                try:
                    master = client.sentinel_master(MASTER_NAME)
                finally:
                    client.close()
                if int(master.get("num-other-sentinels", 0)) < len(SENTINELS) - 1 \
                        or int(master.get("num-slaves", 0)) < len(NODES) - 1:
                    return False
            return True
        wait_until(all_known, service="redis-sentinel",
                   expected="every Sentinel to know the two others and the replica", timeout=timeout, interval=0.2,
                   log=self.log_path(SENTINELS[0]))

    def close(self) -> None:
        self.stack.close()
        self.release_sentinel_links()

    # -- where things are ---------------------------------------------------------------------------------
    def sentinel_endpoints(self) -> list[Endpoint]:
        return list(self.sentinels.values())

    def node_endpoint(self, name: str) -> Endpoint:
        return self.nodes[name]

    def node_for_address(self, host: str, port: int) -> str | None:
        """Sentinels name nodes by their container addresses; the harness by published ports."""
        for name, endpoint in self.nodes.items():
            if (host, int(port)) in ((self.stack.network.address(name), REDIS_PORT), (endpoint.host, endpoint.port)):
                return name
        return None

    def log_path(self, name: str) -> str:
        return self.stack.log_hint(name)

    # -- faults -----------------------------------------------------------------------------------------
    def fault(self, action: str, name: str) -> None:
        if name not in self.nodes and name not in self.sentinels:
            raise ValueError(f"unknown member {name!r} of the Sentinel group")
        try:
            apply = FAULTS[action]
        except KeyError:
            raise ValueError(f"unknown fault {action!r} for {name}") from None
        apply(self, name)

    def is_running(self, name: str) -> bool:
        return self.stack.containers.state(name)[0]

    def is_paused(self, name: str) -> bool:
        return self.stack.containers.state(name)[1]

    def _wait_ready(self, name: str, timeout: float = 30) -> None:
        endpoint = self.nodes.get(name) or self.sentinels[name]
        self.stack.wait_ready(name, pong(endpoint), log=self.log_path(name),
                              timeout=timeout)

    def _start_member(self, name: str) -> None:
        self.stack.containers.start(name)
        self._wait_ready(name)


# The engine acts on a member's container, as on the brief's stack; "start" also waits
# until the member answers, which the baseline relies on before it asks who is master.
FAULTS: dict[str, Callable[[ComposeRedisHA, str], None]] = {
    "stop": lambda group, name: group.stack.containers.stop(name, STOP_TIMEOUT),
    "kill": lambda group, name: group.stack.containers.kill(name),
    "pause": lambda group, name: group.stack.containers.pause(name),
    "resume": lambda group, name: group.stack.containers.unpause(name),
    "start": ComposeRedisHA._start_member,
}

