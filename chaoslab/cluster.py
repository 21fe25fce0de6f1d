"""The cluster interface every backend implements, and what is the same on all of them.

A backend knows how to start, signal and reach the services (processes here,
containers in compose). Everything that only needs a connection (roles, the
baseline, HAProxy's runtime API, promotion by SQL) lives here once, so that the
scenarios never branch on the backend.
"""

from __future__ import annotations

import abc
import csv
import io
from collections.abc import Callable
from pathlib import Path

import redis as redis_client

from . import haproxy_config, pg, redis_probe
from .phases import phase
from .errors import LabError
from .network import HEAL, NETWORK_FAULTS, LinkFaults
from .redis_ha import RedisHA
from .topology import DB_NODES, HAPROXY, PRIMARY, REDIS, REPLICA, SERVICES, Credentials, Endpoint
from .waits import wait_until

# The faults, by the brief's verbs, and what each one does to a service (the report says it in French).
FAULTS = {
    "stop": "arrêt propre (signal d'arrêt du serveur, comme `docker compose stop`)",
    "kill": "SIGKILL de tous ses processus à la fois (un crash)",
    "pause": "SIGSTOP de tous ses processus (un gel : le port accepte encore les connexions, rien ne répond)",
    "resume": "SIGCONT (reprise après un gel)",
    "start": "démarrage, puis attente qu'il réponde à son protocole",
    "restart": "arrêt propre puis démarrage",
}


def fault_steps(action: str, *, stop: Callable[[], object], kill: Callable[[], object],
                pause: Callable[[], object], resume: Callable[[], object],
                start: Callable[[], object]) -> tuple[Callable[[], object], ...]:
    """What a fault (FAULTS) does, as calls on one server's own stop, kill, pause, resume and start:
    the one table of every server that takes the brief's faults."""
    steps = {"stop": (stop,), "kill": (kill,), "pause": (pause,), "resume": (resume,), "start": (start,),
             "restart": (stop, start)}
    if action not in steps:
        raise ValueError(f"unknown fault {action!r}; known: {', '.join(FAULTS)}")
    return steps[action]


PROMOTE_METHODS = ("pg_ctl", "sql")
FENCING_METHODS = ("stop", "read_only")
SWITCH_METHODS = ("restart", "reload", "runtime_api")


class Cluster(LinkFaults, abc.ABC):
    """The lab's stack: the brief's four services, reachable by name."""

    name = "abstract"
    creds: Credentials

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.haproxy_config_name = "brief"
        self.haproxy_source = haproxy_config.source("brief")
        self._haproxy_runtime_changed = False

    # -- what a backend provides ----------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Stop everything and remove every trace of the run."""

    @abc.abstractmethod
    def endpoint(self, service: str) -> Endpoint:
        """Where the harness reaches a service (for haproxy: the write frontend)."""

    @abc.abstractmethod
    def haproxy_read_endpoint(self) -> Endpoint:
        """The role-aware config's read frontend."""

    @abc.abstractmethod
    def log_path(self, service: str) -> Path | str: ...

    @abc.abstractmethod
    def is_running(self, service: str) -> bool: ...

    @abc.abstractmethod
    def is_paused(self, service: str) -> bool: ...

    @abc.abstractmethod
    def _stop(self, service: str) -> None: ...

    @abc.abstractmethod
    def _kill(self, service: str) -> None: ...

    @abc.abstractmethod
    def _pause(self, service: str) -> None: ...

    @abc.abstractmethod
    def _resume(self, service: str) -> None: ...

    @abc.abstractmethod
    def _start(self, service: str) -> None:
        """Start a stopped service and wait until it answers its protocol."""

    @abc.abstractmethod
    def _promote_with_pg_ctl(self, service: str) -> None: ...

    @abc.abstractmethod
    def _apply_haproxy(self, text: str, how: str) -> None:
        """Render ``text`` for this backend, install it, then ``restart`` or ``reload``."""

    @abc.abstractmethod
    def haproxy_command(self, line: str) -> str:
        """One command on HAProxy's runtime API."""

    def haproxy_view_of(self, service: str) -> Endpoint:
        """The address HAProxy uses to reach a database node (the runtime API needs an IP):
        through the HAProxy → node link with the role-aware config, directly with the brief's.

        The role-aware config checks each node's role, so a node it cannot reach is marked down
        whatever the proxy does. The brief's has no check: it learns that a node is down from a
        refused connection, which a proxy turns into one accepted then closed (Toxiproxy does
        the same), and its scenarios measure that refusal (HAProxy's retries, F1)."""
        if self.haproxy_config_name == "role_aware" and self.fault_links is not None:
            linked = self.fault_links.endpoint_for(HAPROXY, service)
            if linked is not None:
                return linked
        return self._node_address(service)

    @abc.abstractmethod
    def _node_address(self, service: str) -> Endpoint:
        """Where HAProxy reaches a database node directly."""

    @abc.abstractmethod
    def rebuild_replica(self, standby: str, primary: str) -> None:
        """Throw the standby's data away and clone it again from the primary."""

    @abc.abstractmethod
    def rejoin(self, old_primary: str, new_primary: str) -> None:
        """Turn a stopped ex-primary into a standby of the new primary with pg_rewind."""

    def path(self, source: str, target: str) -> Endpoint:
        """Where ``source`` connects to reach ``target``; HAProxy reaches a node where its config
        says (through the node's link with the role-aware config only)."""
        if source == HAPROXY and target in DB_NODES:
            return self.haproxy_view_of(target)
        return super().path(source, target)

    def replication_source(self, standby: str, primary: str) -> Endpoint | None:
        """Where ``standby`` reaches ``primary`` for replication when it goes through its link's
        fault proxy (served in the brief's orientation only, db-replica to db-primary); None: directly."""
        return self.fault_links.endpoint_for(standby, primary) if self.fault_links is not None else None

    @abc.abstractmethod
    def redis_ha(self) -> "RedisHA":
        """A Redis Sentinel group (bonus topology) beside the lab; the caller starts and closes it."""

    # -- faults -------------------------------------------------------------------
    @phase("fault")
    def fault(self, action: str, service: str, **parameters: int) -> None:
        """Apply a fault by the brief's service name: stop, kill, pause, resume, start, restart;
        or a network fault (NETWORK_FAULTS, ``heal``) on the links of the service."""
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
        if action in NETWORK_FAULTS or action == HEAL:
            self.fault_network(action, service, **parameters)
            return
        for step in fault_steps(action, stop=lambda: self._stop(service), kill=lambda: self._kill(service),
                                pause=lambda: self._pause(service), resume=lambda: self._resume(service),
                                start=lambda: self._start(service)):
            step()

    def stop(self, service: str) -> None:
        self.fault("stop", service)

    def kill(self, service: str) -> None:
        self.fault("kill", service)

    def pause(self, service: str) -> None:
        self.fault("pause", service)

    def resume(self, service: str) -> None:
        self.fault("resume", service)

    def start_service(self, service: str) -> None:
        self.fault("start", service)

    def restart(self, service: str) -> None:
        self.fault("restart", service)

    @phase("promotion")
    def promote(self, service: str = REPLICA, method: str = "pg_ctl", timeout: float = 30) -> None:
        """End recovery on a standby: ``pg_ctl promote`` (the brief's F2) or ``SELECT pg_promote()``."""
        if service not in DB_NODES:
            raise ValueError(f"{service!r} is not a database node")
        if method == "pg_ctl":
            self._promote_with_pg_ctl(service)
        elif method == "sql":
            pg.query_one(self.endpoint(service), self.creds, "SELECT pg_promote(true, %s)", (int(timeout),),
                         role="superuser", dbname="postgres")
        else:
            raise ValueError(f"unknown promote method {method!r}; known: {', '.join(PROMOTE_METHODS)}")
        wait_until(lambda: not pg.in_recovery(self.endpoint(service), self.creds), service=service,
                   expected="pg_is_in_recovery() to be false after promotion", timeout=timeout,
                   log=self.log_path(service))

    def fence(self, service: str, method: str, timeout: float = 10) -> None:
        """Keep a primary from taking writes before another node is promoted (fencing).

        ``stop``: shut it down, the sure way. ``read_only``: default_transaction_read_only
        for every session, its own included, from their next transaction; it stops clients
        that do not override it, not a client that says ``SET transaction_read_only = off``,
        so it is a fence against mistakes, not against intent."""
        if method == "stop":
            self.stop(service)
        elif method == "read_only":
            pg.alter_system(self.endpoint(service), self.creds, "default_transaction_read_only", "on")
            wait_until(lambda: pg.query_one(self.endpoint(service), self.creds, "SHOW default_transaction_read_only")
                       == "on", service=service, expected="new sessions to be read-only after the reload",
                       timeout=timeout, log=self.log_path(service))
        else:
            raise ValueError(f"unknown fencing method {method!r}; known: {', '.join(FENCING_METHODS)}")

    def make_synchronous(self, standby: str = REPLICA, timeout: float = 10) -> None:
        """Synchronous replication to ``standby`` with ``remote_apply``: a commit is acknowledged
        only once the standby has applied it. Returns once the primary reports it in effect."""
        primary = self.endpoint(PRIMARY)
        pg.alter_system(primary, self.creds, "synchronous_standby_names", f'"{standby}"')
        pg.alter_system(primary, self.creds, "synchronous_commit", "remote_apply")
        wait_until(lambda: pg.query_one(
            primary, self.creds, "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
            (standby,), role="superuser", dbname="postgres") == "sync",
            service=PRIMARY, expected=f"{standby} to be its synchronous standby", timeout=timeout,
            log=self.log_path(PRIMARY))

    # -- HAProxy ----------------------------------------------------------------------
    @phase("haproxy config")
    def use_haproxy_config(self, name: str) -> None:
        """Install one of haproxy/'s configurations (restart) and wait for its routing."""
        self.haproxy_config_name = name
        self.haproxy_source = haproxy_config.source(name)
        self._apply_haproxy(self.haproxy_source, "restart")
        self._haproxy_runtime_changed = False
        self.wait_haproxy_settled()

    @phase("switch")
    def switch_writes(self, to: str, method: str) -> None:
        """Send HAProxy's write traffic to another node: the brief's F3, three ways.

        ``restart``: edit the ``server primary`` line and restart, as the brief does;
        ``reload``: the same edit, then a hitless reload; ``runtime_api``: repoint the
        server over the stats socket, with no file change and no restart.
        """
        if self.haproxy_config_name != "brief":
            raise ValueError("only the brief's config is switched by hand; the role-aware one follows the roles")
        if method in ("restart", "reload"):
            self.haproxy_source = haproxy_config.point_brief_writes_at(self.haproxy_source, to)
            self._apply_haproxy(self.haproxy_source, method)
        elif method == "runtime_api":
            target = self.haproxy_view_of(to)
            server = f"{haproxy_config.WRITE_BACKEND}/{haproxy_config.BRIEF_WRITE_SERVER}"
            answer = self.haproxy_command(f"set server {server} addr {target.host} port {target.port}")
            if "changed" not in answer and "no need to change" not in answer:
                raise LabError(HAPROXY, f"the runtime API to repoint {server} at {to}", self.log_path(HAPROXY),
                               f"it answered {answer.strip()!r}")
            # The checks marked the server down while it pointed at the dead node; left to them,
            # it comes back only after `rise` checks of the brief's 2 s interval. The operator
            # knows the new node is up (they just promoted it), so they say so, as HAProxy's
            # manual offers for slow checks; the next check confirms it or takes it back.
            self.haproxy_command(f"set server {server} health up")
            # Sessions still bound to the old address would hang on a dead node.
            self.haproxy_command(f"shutdown sessions server {server}")
            self._haproxy_runtime_changed = True
        else:
            raise ValueError(f"unknown switch method {method!r}; known: {', '.join(SWITCH_METHODS)}")

    def haproxy_server_rows(self) -> list[dict[str, str]]:
        """One row per server (not the FRONTEND and BACKEND totals) of the runtime API's
        ``show stat``: its columns by name (pxname, svname, status, addr...)."""
        text = self.haproxy_command("show stat").lstrip("# ")
        return [row for row in csv.DictReader(io.StringIO(text)) if row["svname"] not in ("FRONTEND", "BACKEND")]

    def haproxy_server_states(self) -> dict[tuple[str, str], str]:
        """{(backend, server): status} from the runtime API's ``show stat``."""
        return {(row["pxname"], row["svname"]): row["status"] for row in self.haproxy_server_rows()}

    def haproxy_servers_up(self, backend: str = haproxy_config.WRITE_BACKEND) -> set[str]:
        """The servers of one HAProxy backend that would get new connections now."""
        return {server for (name, server), status in self.haproxy_server_states().items()
                if name == backend and status.startswith("UP")}

    def wait_haproxy_routes_writes_to(self, service: str, timeout: float = 15) -> None:
        """Poll until a new connection through HAProxy's write port lands on ``service``."""
        wait_until(lambda: self.node_behind_haproxy() == service, service=HAPROXY,
                   expected=f"new write connections to land on {service}", timeout=timeout,
                   log=self.log_path(HAPROXY))

    def node_behind_haproxy(self, read: bool = False) -> str | None:
        """Which node a new connection through HAProxy reaches, told by the node itself."""
        endpoint = self.haproxy_read_endpoint() if read else self.endpoint(HAPROXY)
        name = pg.query_one(endpoint, self.creds, "SELECT current_setting('cluster_name')")
        return name or None

    def wait_haproxy_settled(self, timeout: float = 15) -> None:
        """Wait until the active config's checks agree with the nodes' real roles."""
        if self.haproxy_config_name == "brief":
            target = haproxy_config.brief_write_target(self.haproxy_source)
            wait_until(lambda: self.haproxy_servers_up() == {haproxy_config.BRIEF_WRITE_SERVER},
                       service=HAPROXY, expected=f"its write server to be UP (pointing at {target})",
                       timeout=timeout, log=self.log_path(HAPROXY))
            return
        roles = {node: self._role(node) for node in DB_NODES}
        expected = {
            haproxy_config.WRITE_BACKEND: {node for node, role in roles.items() if role == "primary"},
            haproxy_config.READ_BACKEND: {node for node, role in roles.items() if role == "standby"},
        }
        wait_until(lambda: all(self.haproxy_servers_up(backend) == nodes for backend, nodes in expected.items()),
                   service=HAPROXY, expected=f"its backends to be UP for exactly {expected}", timeout=timeout,
                   log=self.log_path(HAPROXY))

    def _role(self, node: str) -> str:
        """primary, standby, or down, as the node itself says."""
        try:
            return "standby" if pg.in_recovery(self.endpoint(node), self.creds) else "primary"
        except Exception:
            return "down"

    # -- baseline -------------------------------------------------------------------
    @phase("baseline")
    def restore_baseline(self) -> None:
        """Both nodes up in their original roles, HAProxy on the primary, Redis empty, no data.

        Cheap when nothing changed (a few queries); after a failover it rebuilds the
        replica, so that every scenario starts from the same lab whatever ran before.
        """
        self.heal_network()
        for service in SERVICES:
            if self.is_paused(service):
                self._resume(service)
            if not self.is_running(service):
                self._start(service)
        if pg.in_recovery(self.endpoint(PRIMARY), self.creds):
            self.promote(PRIMARY, method="sql")
        for node in DB_NODES:
            pg.reset_scenario_settings(self.endpoint(node), self.creds)
        if not self._streams_from_primary(REPLICA):
            self.rebuild_replica(REPLICA, PRIMARY)
            self.wait_streaming(REPLICA)
        if self.haproxy_config_name != "brief" or self._haproxy_runtime_changed \
                or self.haproxy_source != haproxy_config.source("brief"):
            self.use_haproxy_config("brief")
        else:
            self.wait_haproxy_settled()
        self.reset_cache()
        lsn = pg.reset_data(self.endpoint(PRIMARY), self.creds)
        self.wait_replayed(REPLICA, lsn)

    def _streams_from_primary(self, standby: str) -> bool:
        try:
            if not pg.in_recovery(self.endpoint(standby), self.creds):
                return False
        except Exception:
            return False
        return bool(pg.query_one(
            self.endpoint(PRIMARY), self.creds,
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
            (standby,), role="superuser", dbname="postgres"))

    def wait_streaming(self, standby: str, timeout: float = 30) -> None:
        wait_until(lambda: self._streams_from_primary(standby), service=standby,
                   expected=f"to stream from {PRIMARY}", timeout=timeout, log=self.log_path(standby))

    def delay_replay(self, standby: str, delay_ms: int, timeout: float = 10) -> None:
        """Set recovery_min_apply_delay on a standby, and return only once it holds.

        A reload is asynchronous: the standby's startup process reads the new value
        some time later. So the delay is proven by its effect: a probe commit that the
        standby has received but not applied.
        """
        primary = self.endpoint(PRIMARY)
        pg.alter_system(self.endpoint(standby), self.creds, "recovery_min_apply_delay", f"{delay_ms}ms")

        def delay_holds() -> bool:
            lsn = pg.probe_commit(primary, self.creds)
            wait_until(lambda: pg.received(self.endpoint(standby), self.creds, lsn), service=standby,
                       expected=f"to receive the WAL up to {lsn}", timeout=5, log=self.log_path(standby))
            return not pg.replayed(self.endpoint(standby), self.creds, lsn)
        wait_until(delay_holds, service=standby, expected=f"an apply delay of {delay_ms} ms to hold",
                   timeout=timeout, interval=0.05, log=self.log_path(standby))

    def wait_caught_up(self, standby: str = REPLICA, timeout: float = 15) -> None:
        """Until ``standby`` has replayed everything the primary has written so far."""
        self.wait_replayed(standby, pg.current_lsn(self.endpoint(PRIMARY), self.creds), timeout)

    @phase("replication wait")
    def wait_replayed(self, standby: str, lsn: str, timeout: float = 15) -> None:
        wait_until(lambda: pg.replayed(self.endpoint(standby), self.creds, lsn), service=standby,
                   expected=f"to replay the WAL up to {lsn}", timeout=timeout, log=self.log_path(standby))

    # -- clients ------------------------------------------------------------------------
    def product_read_counter(self) -> pg.ProductReadCounter:
        """Counts the SELECTs of the products table run by the database nodes that are up, as
        each node counts them (pg_stat_statements): the API's reads seen from PostgreSQL."""
        return pg.ProductReadCounter([self.endpoint(node) for node in DB_NODES
                                      if self.is_running(node) and not self.is_paused(node)], self.creds)

    def product_reads(self) -> int:
        with self.product_read_counter() as counter:
            return counter.count()

    def dsn(self, service: str, role: str = "app") -> str:
        return pg.conninfo(self.endpoint(service), self.creds, role=role)

    def redis(self) -> redis_client.Redis:
        return redis_probe.client(self.endpoint(REDIS), timeout=2)

    def reset_cache(self) -> None:
        """Redis empty, and its snapshot too: a scenario that saved one (to show what a Redis
        with persistence brings back after a restart) must not hand its keys to the next."""
        client = self.redis()
        client.flushall()
        client.save()

    def versions(self) -> dict[str, str]:
        versions = {"postgresql": pg.server_version(self.endpoint(PRIMARY), self.creds),
                    "redis": self.redis().info("server")["redis_version"]}
        for line in self.haproxy_command("show info").splitlines():
            if line.startswith("Version:"):
                versions["haproxy"] = line.split(":", 1)[1].strip()
        return versions

    def describe(self) -> dict[str, dict]:
        """Each service: where it is, whether it runs, its log (for `status` and failures)."""
        return {service: {"endpoint": str(self.endpoint(service)), "running": self.is_running(service),
                          "paused": self.is_paused(service), "log": str(self.log_path(service))}
                for service in SERVICES}
