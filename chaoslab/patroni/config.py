"""The Patroni topology as data: its nodes, its timings, each node's patroni.yml and HAProxy's config.

Pure functions, no I/O, so that the rules (Patroni's timing inequality, the
rendering of haproxy/haproxy-patroni.cfg) are unit-tested without a server.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import haproxy_config
from ..network import Link
from ..topology import HAPROXY, Credentials, Endpoint

SCOPE = "chaoslab"               # the Patroni cluster's name (its keys in etcd, PostgreSQL's cluster_name)
NODES = ("pg-1", "pg-2")         # roles move, so nodes are named for themselves, not for a role
ETCD = "etcd"
# Which etcd API Patroni talks to: "etcd" is the v2 API, "etcd3" the v3 one. Debian
# bookworm's Patroni 3.0.2 has a split-brain bug on etcd3, fixed in Patroni 3.0.3
# (patroni/patroni#2689): a leader frozen past its lease gets a new lease when it
# thaws and overwrites the leader key that another node took meanwhile, so the
# new primary is demoted and its writes are rewound away. The pause scenario
# caught it. The v2 API refreshes the key with a compare-and-swap on its value,
# which fails once another node holds it, so the old leader demotes itself.
# With Patroni >= 3.0.3, "etcd3" is the better choice (etcd 3.6 drops v2).
DCS_API = "etcd"
# The custom setting that tells, in SQL, which node a connection reached. Patroni
# forces cluster_name to the scope (the same on every node), so it cannot serve.
NODE_NAME_SETTING = "chaoslab.node_name"

HAPROXY_CONFIG = haproxy_config.HAPROXY_DIR / "haproxy-patroni.cfg"
# What haproxy-patroni.cfg says, as compose would run it: every node on its own host,
# PostgreSQL on 5432, Patroni's REST API on 8008.
PG_PORT_IN_FILES = 5432
REST_PORT_IN_FILES = 8008


@dataclass(frozen=True)
class Timings:
    """Patroni's clock for the lab (seconds).

    - ``loop_wait`` 1: how often each Patroni wakes up; it bounds how long a
      crashed PostgreSQL goes unnoticed, and every step Patroni takes on its own
      (naming a sync standby, starting a rejoin, a demotion) waits for a loop.
      Patroni's default is 10; it counts in whole seconds.
    - ``retry_timeout`` 3: how long a Patroni keeps retrying etcd or PostgreSQL
      before it gives up the leader key (a primary demotes itself). Every hop is
      local, so a request answers in milliseconds; 3 s still rides out a
      scheduling stall of a busy two-core machine (``make test`` keeps both
      cores 81% busy and passes with it).
    - ``ttl`` 7: the leader key's lease. A leader that stops refreshing it
      (node lost, paused) is replaced after at most this long. Patroni's rule
      ``loop_wait + 2 * retry_timeout <= ttl`` (1 + 2 * 3 = 7) makes sure a
      healthy leader always refreshes the key before it expires, even after
      one failed retry cycle; 7 is the smallest ttl these two values allow.
    - ``primary_start_timeout`` 0: when the leader's PostgreSQL crashes, fail
      over at once instead of restarting it in place (Patroni's default is to
      try a restart for 300 s). It can lose asynchronous writes, which is what
      the lab measures; with ``synchronous_mode`` it loses none.
    """

    ttl: int = 7
    loop_wait: int = 1
    retry_timeout: int = 3
    primary_start_timeout: int = 0

    def __post_init__(self) -> None:
        if self.loop_wait < 1 or self.retry_timeout < 1:
            raise ValueError("loop_wait and retry_timeout must be at least 1 second")
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"Patroni's rule loop_wait + 2 * retry_timeout <= ttl is broken: "
                f"{self.loop_wait} + 2 * {self.retry_timeout} > {self.ttl}")

    @property
    def leader_loss_bound(self) -> int:
        """The longest a lost leader can go unreplaced: its key lives ttl, then one loop."""
        return self.ttl + self.loop_wait


LAB_TIMINGS = Timings()


# The topology's links (chaoslab.network): each node's Patroni to etcd (its leader key, its
# member key, the cluster's state), and HAProxy's checks of each node's Patroni REST API
# (HAProxy's sessions to PostgreSQL go directly: the link to a node is its REST API).
LINKS = (*(Link(node, ETCD) for node in NODES), *(Link(HAPROXY, node) for node in NODES))


@dataclass(frozen=True)
class NodeAddresses:
    postgres: Endpoint
    rest: Endpoint


def node_config(name: str, *, addresses: NodeAddresses, etcd: Endpoint, data_dir: Path, bin_dir: Path | None,
                socket_dir: Path, creds: Credentials, timings: Timings = LAB_TIMINGS,
                synchronous_mode: bool = False, listen: NodeAddresses | None = None,
                client_networks: tuple[str, ...] = ("127.0.0.1/32",), etcd_is_a_proxy: bool = False) -> dict:
    """One node's patroni.yml, as a dict (written as JSON, which YAML reads as it is).

    ``bootstrap.dcs`` only counts for the node that initialises the cluster; the
    rest is local to each node. ``addresses`` are where the other nodes, HAProxy
    and etcd's member list reach this node; ``listen`` where it binds, if that
    differs (a container binds every address). ``client_networks`` may connect over
    TCP, with a password: the nodes' and HAProxy's addresses. ``bin_dir`` None:
    PostgreSQL's programs are on PATH (an image). ``etcd_is_a_proxy``: the node reaches
    etcd through its link's fault proxy; Patroni must then not ask etcd for its members'
    addresses and go round it (etcd's ``use_proxies``).
    """
    pg = addresses.postgres
    bound = listen or addresses
    hba = ["local all all trust"]
    hba += [f"host replication {creds.replication_user} {network} scram-sha-256" for network in client_networks]
    hba += [f"host all all {network} scram-sha-256" for network in client_networks]
    return {
        "scope": SCOPE,
        "name": name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": str(bound.rest), "connect_address": str(addresses.rest)},
        DCS_API: {"hosts": [str(etcd)], "protocol": "http", **({"use_proxies": True} if etcd_is_a_proxy else {})},
        "bootstrap": {
            "dcs": {
                "ttl": timings.ttl,
                "loop_wait": timings.loop_wait,
                "retry_timeout": timings.retry_timeout,
                "primary_start_timeout": timings.primary_start_timeout,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": synchronous_mode,
                "postgresql": {
                    "use_pg_rewind": True,   # an old primary rejoins as a standby, no new clone
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",   # pg_rewind needs it (or data checksums)
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "max_connections": 80,
                        "password_encryption": "scram-sha-256",
                        "wal_receiver_status_interval": "1s",
                        "wal_retrieve_retry_interval": "500ms",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, "no-locale", {"auth-host": "scram-sha-256"}, {"auth-local": "trust"}],
        },
        "postgresql": {
            "listen": str(bound.postgres),
            "connect_address": str(pg),
            "data_dir": str(data_dir),
            "bin_dir": "" if bin_dir is None else str(bin_dir),
            "pgpass": str(socket_dir / "pgpass"),
            "use_unix_socket": True,
            "authentication": {
                "superuser": {"username": creds.superuser, "password": creds.superuser_password},
                "replication": {"username": creds.replication_user, "password": creds.replication_password},
            },
            "parameters": {
                "unix_socket_directories": str(socket_dir),
                "unix_socket_permissions": "0700",
                NODE_NAME_SETTING: name,
                "shared_buffers": "32MB",
                # A killed process loses nothing the OS already has, and the lab never
                # crashes the OS: no fsync keeps bootstrap, clones and rewinds fast.
                "fsync": "off",
                "log_line_prefix": f"%m [%p] {name} %q%u@%d ",
            },
            "pg_hba": hba,
            "basebackup": [{"checkpoint": "fast"}, "no-sync"],   # fsync is off, as above
        },
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def node_config_text(config: dict) -> str:
    return "# Written by chaoslab (JSON is YAML): one Patroni node of the lab.\n" + json.dumps(config, indent=2) + "\n"


# -- HAProxy --------------------------------------------------------------------------------------
_SERVER_LINE = re.compile(r"^(?P<head>\s*server\s+(?P<name>\S+)\s.*)$", re.MULTILINE)


def haproxy_source() -> str:
    return HAPROXY_CONFIG.read_text()


def route_checks(text: str, checks: dict[str, Endpoint]) -> str:
    """Each node's ``check port 8008`` aimed at ``checks[node]`` (``check addr A port P``): HAProxy
    asks Patroni's REST API through the node's link, while its sessions go to PostgreSQL directly."""
    def server_line(match: re.Match) -> str:
        check = checks.get(match.group("name"))
        if check is None:
            return match.group(0)
        return re.sub(rf"\bport {REST_PORT_IN_FILES}\b", f"addr {check.host} port {check.port}", match.group(0))
    return _SERVER_LINE.sub(server_line, text)


def render_haproxy(text: str, nodes: dict[str, NodeAddresses], *, write_bind: Endpoint, read_bind: Endpoint,
                   socket_path: Path) -> str:
    """haproxy-patroni.cfg with this backend's addresses.

    The shared renderer substitutes ``pg-1:5432``, the binds and the socket; on
    top of that, each node's ``check port 8008`` becomes its own REST port,
    since here every node shares one address.
    """
    addresses = haproxy_config.Addresses(nodes={name: node.postgres for name, node in nodes.items()},
                                         write_bind=write_bind, read_bind=read_bind, socket_path=socket_path)
    text = haproxy_config.render(text, addresses)

    def server_line(match: re.Match) -> str:
        node = nodes.get(match.group("name"))
        if node is None:
            return match.group(0)
        return re.sub(rf"\bport {REST_PORT_IN_FILES}\b", f"port {node.rest.port}", match.group(0))

    rendered = _SERVER_LINE.sub(server_line, text)
    directives = "\n".join(line for line in rendered.splitlines() if not line.lstrip().startswith("#"))
    leftovers = re.findall(rf"\S+:{PG_PORT_IN_FILES}\b|\bport {REST_PORT_IN_FILES}\b", directives)
    if leftovers:
        raise ValueError(f"the HAProxy config still names container addresses after rendering: {leftovers}")
    return rendered
