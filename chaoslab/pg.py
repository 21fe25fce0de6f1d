"""PostgreSQL operations that only need a connection: the same on every backend."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from .topology import Credentials, Endpoint

PRODUCTS_DDL = (Path(__file__).parent / "sql" / "products.sql").read_text()
# Settings that scenarios change with ALTER SYSTEM; the baseline resets exactly these.
SCENARIO_SETTINGS = ("recovery_min_apply_delay", "synchronous_standby_names", "synchronous_commit",
                     "default_transaction_read_only")


def conninfo(endpoint: Endpoint, creds: Credentials, *, role: str = "app", dbname: str | None = None) -> str:
    user, password = {
        "app": (creds.app_user, creds.app_password),
        "superuser": (creds.superuser, creds.superuser_password),
        "replication": (creds.replication_user, creds.replication_password),
    }[role]
    return psycopg.conninfo.make_conninfo(
        host=endpoint.host, port=endpoint.port, user=user, password=password,
        dbname=dbname or creds.database, connect_timeout=2, application_name="chaoslab",
    )


def connect(endpoint: Endpoint, creds: Credentials, *, role: str = "app", dbname: str | None = None) -> psycopg.Connection:
    return psycopg.connect(conninfo(endpoint, creds, role=role, dbname=dbname), autocommit=True)


def query_one(endpoint: Endpoint, creds: Credentials, query: str, params=None, *, role: str = "app", dbname: str | None = None):
    with connect(endpoint, creds, role=role, dbname=dbname) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row and len(row) == 1 else row


def in_recovery(endpoint: Endpoint, creds: Credentials) -> bool:
    return bool(query_one(endpoint, creds, "SELECT pg_is_in_recovery()"))


def current_lsn(endpoint: Endpoint, creds: Credentials) -> str:
    return query_one(endpoint, creds, "SELECT pg_current_wal_lsn()::text")


def replayed(endpoint: Endpoint, creds: Credentials, lsn: str) -> bool:
    return bool(query_one(endpoint, creds, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)))


def bootstrap_roles(endpoint: Endpoint, creds: Credentials) -> None:
    """The brief's users and database, the replication role and HAProxy's check role."""
    with connect(endpoint, creds, role="superuser", dbname="postgres") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(creds.app_user), sql.Literal(creds.app_password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(creds.database), sql.Identifier(creds.app_user)))
        conn.execute(sql.SQL("CREATE ROLE {} REPLICATION LOGIN PASSWORD {}").format(
            sql.Identifier(creds.replication_user), sql.Literal(creds.replication_password)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(creds.check_user)))


def ensure_products_table(endpoint: Endpoint, creds: Credentials) -> None:
    with connect(endpoint, creds) as conn:
        exists = conn.execute("SELECT to_regclass('public.products') IS NOT NULL").fetchone()[0]
        if not exists:
            conn.execute(PRODUCTS_DDL)


def enable_statement_counts(endpoint: Endpoint, creds: Credentials) -> None:
    """pg_stat_statements in the application's database (the server preloads the library);
    a standby cloned from this node gets the extension with the rest."""
    with connect(endpoint, creds, role="superuser") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


# SELECTs of the products table, as pg_stat_statements counts them in this database.
_PRODUCT_READS = ("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                  "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                  "AND query ILIKE 'select%from products%'")


class ProductReadCounter:
    """How many SELECTs of the products table some nodes have run, as PostgreSQL itself
    counts them (pg_stat_statements): the API's database reads, seen from outside it.
    One open connection per node, so that it can be sampled every few milliseconds."""

    def __init__(self, endpoints: list[Endpoint], creds: Credentials) -> None:
        self._connections = [connect(endpoint, creds, role="superuser") for endpoint in endpoints]

    def count(self) -> int:
        return sum(int(conn.execute(_PRODUCT_READS).fetchone()[0]) for conn in self._connections)

    def close(self) -> None:
        for conn in self._connections:
            conn.close()

    def __enter__(self) -> "ProductReadCounter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def reset_data(endpoint: Endpoint, creds: Credentials) -> str:
    """Empty the products table; returns the LSN a standby must replay to see it empty."""
    ensure_products_table(endpoint, creds)
    with connect(endpoint, creds) as conn:
        conn.execute("TRUNCATE products RESTART IDENTITY")
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def reset_scenario_settings(endpoint: Endpoint, creds: Credentials) -> bool:
    """Undo the ALTER SYSTEM of earlier scenarios, and a replay they paused; True if anything had to change."""
    with connect(endpoint, creds, role="superuser", dbname="postgres") as conn:
        if conn.execute("SELECT pg_is_in_recovery() AND pg_is_wal_replay_paused()").fetchone()[0]:
            conn.execute("SELECT pg_wal_replay_resume()")
        changed = conn.execute(
            "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%%postgresql.auto.conf' AND name = ANY(%s)",
            (list(SCENARIO_SETTINGS),),
        ).fetchone()[0]
        if changed:
            for name in SCENARIO_SETTINGS:
                conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            conn.execute("SELECT pg_reload_conf()")
    return bool(changed)


def set_replay_paused(endpoint: Endpoint, creds: Credentials, paused: bool) -> None:
    """Pause or resume a standby's replay: it keeps receiving WAL, and applies none of it."""
    query_one(endpoint, creds, "SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()",
              role="superuser", dbname="postgres")


def alter_system(endpoint: Endpoint, creds: Credentials, name: str, value: str) -> None:
    """Change one setting with ALTER SYSTEM and reload (no restart needed for these)."""
    if name not in SCENARIO_SETTINGS:
        raise ValueError(f"{name} is not a scenario setting the baseline knows how to undo")
    with connect(endpoint, creds, role="superuser", dbname="postgres") as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


def probe_commit(endpoint: Endpoint, creds: Credentials) -> str:
    """Commit a tiny write in the harness' own table; returns the LSN after it."""
    with connect(endpoint, creds) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS chaoslab_probe (at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO chaoslab_probe DEFAULT VALUES")
        return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def commit_marker(endpoint: Endpoint, creds: Credentials) -> str:
    """Commit a row with a fresh random token in the harness' own table; returns the token.

    A standby that shows it has replayed the WAL of this very server: an LSN alone does not
    say so across timelines (a standby that forked ahead on an old timeline has a higher one)."""
    with connect(endpoint, creds) as conn:
        # Bounded: under synchronous replication a commit waits for a standby (a cancelled
        # wait leaves the row committed, and the caller simply polls again).
        conn.execute("SET statement_timeout = '5s'")
        insert = "INSERT INTO chaoslab_marker DEFAULT VALUES RETURNING token"
        try:
            return str(conn.execute(insert).fetchone()[0])
        except psycopg.errors.UndefinedTable:   # the first marker of this database (probes call this often)
            conn.execute("CREATE TABLE IF NOT EXISTS chaoslab_marker (token uuid PRIMARY KEY DEFAULT gen_random_uuid())")
            return str(conn.execute(insert).fetchone()[0])


def has_marker(endpoint: Endpoint, creds: Credentials, token: str) -> bool:
    try:
        return bool(query_one(endpoint, creds, "SELECT count(*) FROM chaoslab_marker WHERE token = %s", (token,)))
    except psycopg.errors.UndefinedTable:   # not even the table's creation replayed yet
        return False


def received(endpoint: Endpoint, creds: Credentials, lsn: str) -> bool:
    return bool(query_one(endpoint, creds, "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (lsn,)))


def server_version(endpoint: Endpoint, creds: Credentials) -> str:
    return query_one(endpoint, creds, "SHOW server_version")


def standby_lags(conn: psycopg.Connection) -> list[tuple[str, str, int | None, float | None]]:
    """Each standby a primary streams to, from its pg_stat_replication: (application_name, state,
    bytes not yet replayed, replay_lag in seconds)."""
    return conn.execute("SELECT application_name, state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), "
                        "extract(epoch FROM replay_lag) FROM pg_stat_replication").fetchall()
