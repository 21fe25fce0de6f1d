"""The Redis Sentinel group (bonus) in containers: profile ``sentinel`` of docker-compose.yml.

One master, one replica, three Sentinels (a quorum of two) with the lab's timings
(chaoslab/redis_ha.py), as services of the run's own compose project, on its network
and fixed addresses. Every member announces its container address: that is what a
Sentinel hands out for the master, and the API, which runs on the host, connects to
it directly (Linux routes to a bridge network's addresses). The harness reaches every
member through a published port of 127.0.0.1, and the API finds the Sentinels there.
"""

from __future__ import annotations

import shlex

import redis as redis_client

from ..errors import LabError
from ..redis_ha import MASTER_NAME, SENTINEL_TIMINGS, RedisHA
from ..topology import Endpoint
from ..waits import wait_until
from . import project as lab_project
from .cli import Compose
from .cluster import LOGS_DIR, ComposeCluster
from .containers import Containers

PROFILE = "sentinel"
NODES = ("redis-ha-1", "redis-ha-2")
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
REDIS_PORT = 6379
SENTINEL_PORT = 26379
STOP_TIMEOUT = 10


def _variable(service: str, what: str) -> str:
    """The compose file's variable for a member's published port or address: redis-ha-1 -> REDIS_HA_1_PORT."""
    return f"{service.upper().replace('-', '_')}_{what}"


class ComposeRedisHA(RedisHA):
    """The Sentinel group beside the brief's stack, in the same compose project."""

    def __init__(self, cluster: ComposeCluster) -> None:
        self.cluster = cluster
        run_dir = cluster.run_dir
        self.nodes = {name: Endpoint("127.0.0.1", run_dir.reserve_port()) for name in NODES}
        self.sentinels = {name: Endpoint("127.0.0.1", run_dir.reserve_port()) for name in SENTINELS}
        self.compose: Compose | None = None
        self.containers = Containers(cluster.project, self.log_path)
        self.saved_logs = LOGS_DIR / f"{cluster.project}-sentinel.log"

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        cluster = self.cluster
        env = {**cluster._compose_environment(), **self._variables()}
        env_file = cluster.run_dir.path / "compose-sentinel.env"
        lab_project.write_env_file(env_file, env)
        override = cluster.run_dir.path / "docker-compose.sentinel.json"
        lab_project.write_override(override, self._override())
        self.compose = Compose(cluster.compose.command, [*cluster.compose.files, override], cluster.project,
                               env_file, set(env))
        try:
            # The replica first: a Sentinel learns the replicas from the master's INFO, which it
            # asks at once when it connects, then only every 10 s.
            self.compose("--profile", PROFILE, "up", "-d", "--no-deps", *NODES, service="redis-sentinel",
                         expected="`up -d` to start the Sentinel group's Redis servers", timeout=180)
            for name in NODES:
                self._wait_ready(name)
            wait_until(lambda: self.replica_linked(NODES[1]), service=NODES[1],
                       expected=f"to replicate {NODES[0]}", timeout=30, interval=0.1, log=self.log_path(NODES[1]))
            self.compose("--profile", PROFILE, "up", "-d", "--no-deps", *SENTINELS, service="redis-sentinel",
                         expected="`up -d` to start the Sentinels", timeout=180)
            for name in SENTINELS:
                self._wait_ready(name)
            self.wait_settled()
            self._wait_sentinels_know_the_group()
        except BaseException:
            self.close()
            raise

    def _variables(self) -> dict[str, str]:
        address = self.cluster.network.address
        env = {"SENTINEL_DOWN_AFTER_MS": str(SENTINEL_TIMINGS["down_after_ms"]),
               "SENTINEL_FAILOVER_TIMEOUT_MS": str(SENTINEL_TIMINGS["failover_timeout_ms"])}
        for name, endpoint in {**self.nodes, **self.sentinels}.items():
            env[_variable(name, "PORT")] = str(endpoint.port)
            env[_variable(name, "ADDRESS")] = address(name)
        return env

    def _override(self) -> dict:
        services = {name: {"networks": {"default": {"ipv4_address": self.cluster.network.address(name)}},
                           "labels": {lab_project.OWNER_LABEL: self.cluster.project}}
                    for name in [*NODES, *SENTINELS]}
        return {"services": services,
                "networks": {"default": {"external": True, "name": self.cluster.network.name}}}

    def _wait_sentinels_know_the_group(self, timeout: float = 30) -> None:
        """A Sentinel that knows no other cannot get a majority to fail over, and one that knows no
        replica has nothing to promote ("-failover-abort-no-good-slave"): wait until each knows both."""
        def all_known() -> bool:
            for endpoint in self.sentinel_endpoints():
                client = _client(endpoint)
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
        if self.compose is None:
            return
        names = [*NODES, *SENTINELS]
        try:
            done = self.compose("--profile", PROFILE, "logs", "--no-color", "-t", *names, service="redis-sentinel",
                                expected="the group's logs", timeout=60, check=False)
            LOGS_DIR.mkdir(parents=True, exist_ok=True)
            lab_project.write_private(self.saved_logs, done.stdout + done.stderr)
        except (LabError, OSError):
            pass
        try:
            self.compose("--profile", PROFILE, "rm", "-f", "-s", "-v", *names, service="redis-sentinel",
                         expected="the group's containers removed", timeout=120, check=False)
        except LabError:
            pass  # the project's clean-up removes whatever is left, by label
        self.containers.forget(*names)
        self.compose = None

    # -- where things are ---------------------------------------------------------------------------------
    def sentinel_endpoints(self) -> list[Endpoint]:
        return list(self.sentinels.values())

    def node_endpoint(self, name: str) -> Endpoint:
        return self.nodes[name]

    def node_for_address(self, host: str, port: int) -> str | None:
        """Sentinels name nodes by their container addresses; the harness by published ports."""
        for name, endpoint in self.nodes.items():
            if (host, int(port)) in ((self.cluster.network.address(name), REDIS_PORT), (endpoint.host, endpoint.port)):
                return name
        return None

    def log_path(self, name: str) -> str:
        if self.compose is None:
            return str(self.saved_logs)
        return f"{shlex.join(self.compose.base)} --profile {PROFILE} logs {name}; after the run: {self.saved_logs}"

    # -- faults -----------------------------------------------------------------------------------------
    def fault(self, action: str, name: str) -> None:
        if name not in self.nodes and name not in self.sentinels:
            raise ValueError(f"unknown member {name!r} of the Sentinel group")
        if action == "stop":
            self.containers.stop(name, STOP_TIMEOUT)
        elif action == "kill":
            self.containers.kill(name)
        elif action == "pause":
            self.containers.pause(name)
        elif action == "resume":
            self.containers.unpause(name)
        elif action == "start":
            self.containers.start(name)
            self._wait_ready(name)
        else:
            raise ValueError(f"unknown fault {action!r} for {name}")

    def is_running(self, name: str) -> bool:
        return self.containers.state(name)[0]

    def is_paused(self, name: str) -> bool:
        return self.containers.state(name)[1]

    def _wait_ready(self, name: str, timeout: float = 30) -> None:
        endpoint = self.nodes.get(name) or self.sentinels[name]

        def pong() -> bool:
            if not self.is_running(name):
                raise LabError(name, f"PONG on {endpoint}", self.log_path(name), "its container exited")
            client = _client(endpoint)
            try:
                return client.ping()
            finally:
                client.close()
        wait_until(pong, service=name, expected=f"PONG on {endpoint}", timeout=timeout, interval=0.1,
                   log=self.log_path(name))


def _client(endpoint: Endpoint) -> redis_client.Redis:
    return redis_client.Redis(host=endpoint.host, port=endpoint.port, socket_timeout=1, socket_connect_timeout=1,
                              decode_responses=True)
