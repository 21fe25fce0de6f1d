"""A PostgreSQL node as a local process: initdb or pg_basebackup, start, promote, rewind."""

from __future__ import annotations

import glob
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from .. import pg
from ..errors import LabError
from ..rundir import RunDir
from ..topology import Credentials, Endpoint, slot_name
from .process import ServerProcess, ServerUser


def find_bindir() -> Path:
    """The newest PostgreSQL server install (Debian keeps it out of PATH)."""
    override = os.environ.get("CHAOSLAB_PG_BINDIR")
    candidates = [override] if override else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))[::-1]
    for candidate in candidates:
        if candidate and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    raise LabError("db-primary", "a PostgreSQL server install (postgres, initdb, pg_basebackup)",
                   cause="none was found in /usr/lib/postgresql/*/bin: install postgresql "
                         "(apt-get install postgresql) or set CHAOSLAB_PG_BINDIR")


# Settings the lab needs on every node; why each one, where it is not obvious.
POSTGRESQL_CONF = """\
# Written by chaoslab for {name}. Scenario changes go through ALTER SYSTEM
# (postgresql.auto.conf) and are reset by the baseline.
listen_addresses = '{host}'
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
cluster_name = '{name}'            # also the standby's application_name upstream
max_connections = 80
shared_buffers = 32MB
password_encryption = scram-sha-256
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_log_hints = on                  # pg_rewind needs it to rejoin an old primary
wal_receiver_status_interval = 1s   # standby feedback every second: fresh lag figures
wal_retrieve_retry_interval = 500ms # a standby retries a lost primary quickly
# Counts every statement the moment it ends (the table counters of pg_stat_user_tables
# reach readers only when a backend flushes them: 10 s later, measured here): the
# scenarios count the API's database reads with it, from PostgreSQL's own side.
shared_preload_libraries = 'pg_stat_statements'
# A killed server loses nothing the OS already has, and this lab never crashes the OS:
# skipping fsync keeps start-up and tests fast without changing what the scenarios show.
fsync = off
log_line_prefix = '%m [%p] %q%u@%d '
"""

PG_HBA_CONF = """\
# Written by chaoslab. The socket directory is private to the server user.
local   all          all                          trust
host    replication  {replication_user}  {clients}  scram-sha-256
# HAProxy's role check: no password, this role, this database, these addresses only.
host    postgres     {check_user}  {clients}  trust
host    all          {check_user}  0.0.0.0/0     reject
host    all          all           {clients}  scram-sha-256
"""


@dataclass
class PostgresNode:
    name: str
    endpoint: Endpoint
    run_dir: RunDir
    user: ServerUser
    creds: Credentials
    bindir: Path
    # Its network namespace (nsenter's arguments; chaoslab.local.netns), and the addresses its
    # clients come from: 127.0.0.1, or the run's subnet when the servers have namespaces.
    namespace: list[str] | None = None
    clients: str = "127.0.0.1/32"

    def __post_init__(self) -> None:
        self.dir = self.run_dir.service_dir(self.name)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.log.touch()
        self.user.own(self.dir)
        self.process = ServerProcess(
            name=self.name, args=[str(self.bindir / "postgres"), "-D", str(self.data)], cwd=self.dir,
            log=self.log, user=self.user, run_dir=self.run_dir,
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back clients, checkpoint, exit
            namespace=self.namespace,
        )

    # -- creation -------------------------------------------------------------
    def init_primary(self) -> None:
        pwfile = self.dir / "superuser.pw"
        pwfile.write_text(self.creds.superuser_password + "\n")
        os.chmod(pwfile, 0o600)
        self.user.own(pwfile)
        try:
            self._tool("initdb", "-D", str(self.data), "-U", self.creds.superuser, f"--pwfile={pwfile}",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "-N",
                       expected="initdb to create a data directory")
        finally:
            pwfile.unlink(missing_ok=True)
        self.write_config()
        self.start()
        pg.bootstrap_roles(self.endpoint, self.creds)
        pg.ensure_products_table(self.endpoint, self.creds)
        pg.enable_statement_counts(self.endpoint, self.creds)

    def clone_from(self, primary: "PostgresNode", via: Endpoint | None = None) -> None:
        """The brief's replica, made the real way: pg_basebackup -R -X stream with a slot; it then
        streams from ``primary`` through ``via`` (its replication link's fault proxy) if given."""
        with pg.connect(primary.endpoint, self.creds, role="superuser", dbname="postgres") as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (slot_name(self.name),))
        self._tool("pg_basebackup", "-h", primary.endpoint.host, "-p", str(primary.endpoint.port),
                   "-U", self.creds.replication_user, "-D", str(self.data), "-R", "-X", "stream",
                   "-C", "-S", slot_name(self.name), "-c", "fast",
                   # No fsync of the copy, as the servers run with fsync off (above): the lab
                   # never crashes the OS. A clone's CPU is nearly all system time, and the
                   # fsyncs a third of it (0.31 s -> 0.21 s, by hand on an idle lab).
                   "--no-sync",
                   expected=f"pg_basebackup to clone {primary.name}",
                   env={"PGPASSWORD": self.creds.replication_password})
        if via is None:
            self.write_config()
        else:
            self.follow(primary, via)

    def write_config(self) -> None:
        (self.data / "postgresql.conf").write_text(POSTGRESQL_CONF.format(
            name=self.name, host=self.endpoint.host, port=self.endpoint.port, socket_dir=self.dir))
        (self.data / "pg_hba.conf").write_text(PG_HBA_CONF.format(
            replication_user=self.creds.replication_user, check_user=self.creds.check_user, clients=self.clients))
        self.user.own(self.data)

    def wipe(self) -> None:
        """Remove the data directory (the node must be stopped), to clone it again."""
        import shutil
        shutil.rmtree(self.data, ignore_errors=True)

    # -- lifecycle --------------------------------------------------------------
    def start(self, timeout: float = 30) -> None:
        self.process.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30) -> None:
        self.process.wait_answering(
            lambda: pg.query_one(self.endpoint, self.creds, "SELECT 1", role="superuser", dbname="postgres") == 1,
            expected=f"PostgreSQL to answer on {self.endpoint}", timeout=timeout)

    def promote_with_pg_ctl(self) -> None:
        self._tool("pg_ctl", "promote", "-D", str(self.data), "-w", "-t", "30",
                   expected="pg_ctl promote to end recovery")

    def rewind_from(self, source: "PostgresNode", via: Endpoint | None = None) -> None:
        """Make this stopped ex-primary a standby of ``source`` again (part F, rejoin)."""
        with pg.connect(source.endpoint, self.creds, role="superuser", dbname="postgres") as conn:
            # A freshly promoted source has not written its new timeline to its control
            # file until a checkpoint: without one, pg_rewind says "no rewind required".
            conn.execute("CHECKPOINT")
            if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                (slot_name(self.name),)).fetchone():
                conn.execute("SELECT pg_create_physical_replication_slot(%s)", (slot_name(self.name),))
        source_dsn = pg.conninfo(source.endpoint, self.creds, role="superuser", dbname="postgres")
        self._tool("pg_rewind", "--target-pgdata", str(self.data), f"--source-server={source_dsn}",
                   "-R", expected=f"pg_rewind to resynchronise with {source.name}")
        self.follow(source, via)

    def follow(self, source: "PostgresNode", via: Endpoint | None = None) -> None:
        """Point this node's standby settings at ``source``, reached through ``via`` if given
        (written where -R writes them)."""
        auto = self.data / "postgresql.auto.conf"
        kept = [line for line in auto.read_text().splitlines()
                if not line.startswith(("primary_conninfo", "primary_slot_name"))] if auto.exists() else []
        # Named after the node, as -R leaves it (cluster_name): pg_stat_replication on the primary
        # and synchronous_standby_names know a standby by it.
        conninfo = make_conninfo(pg.conninfo(via or source.endpoint, self.creds, role="replication",
                                             dbname="replication"), application_name=self.name)
        kept += [f"primary_conninfo = '{conninfo.replace(chr(39), chr(39) * 2)}'",
                 f"primary_slot_name = '{slot_name(self.name)}'"]
        auto.write_text("\n".join(kept) + "\n")
        (self.data / "standby.signal").touch()
        self.write_config()

    def _tool(self, tool: str, *args: str, expected: str, env: dict[str, str] | None = None) -> str:
        return self.user.run([str(self.bindir / tool), *args], service=self.name, expected=expected,
                             log=self.log, cwd=self.dir, env=env)
