"""The lab's services and roles, as data.

Scenarios and faults refer to services by the brief's names; a backend maps each
name to something it can start, stop and reach. Variants (Patroni, Sentinel) are
new topologies, not new code paths in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIMARY = "db-primary"
REPLICA = "db-replica"
REDIS = "redis"
HAPROXY = "haproxy"
API = "api"   # the system under test: a client of the others, not one of the brief's services

DB_NODES = (PRIMARY, REPLICA)
SERVICES = (PRIMARY, REPLICA, REDIS, HAPROXY)

# The brief's published ports, used by `python -m chaoslab up` when they are free.
BRIEF_PORTS = {PRIMARY: 5432, REPLICA: 5433, REDIS: 6379, HAPROXY: 5439}
# The role-aware HAProxy config adds a read frontend; it has no port in the brief.
BRIEF_HAPROXY_READ_PORT = 5440

# Replication slot on a primary for a given standby node: one slot per standby.
def slot_name(standby: str) -> str:
    return standby.replace("-", "_")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """Who the lab's clients connect as. Values come from the environment (see settings)."""

    superuser: str
    superuser_password: str
    app_user: str
    app_password: str
    database: str
    replication_user: str
    replication_password: str
    # The HAProxy role check logs in without a password, restricted by pg_hba to this role,
    # this database and the proxy's address, so it holds no secret.
    check_user: str = "haproxy_check"
