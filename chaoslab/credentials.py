"""Credentials from the environment, never from code.

A variable that is not set gets a random value for this run: the lab needs no
fixed password, and a printed `psql` line carries what the student needs.
"""

from __future__ import annotations

import os
import secrets

from .topology import Credentials


def _value(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value:
        return value
    return default if default is not None else secrets.token_urlsafe(12)


def from_environment() -> Credentials:
    """Read the lab's credentials (the brief's names as defaults for user and database)."""
    return Credentials(
        superuser=_value("POSTGRES_USER", "postgres"),
        superuser_password=_value("POSTGRES_PASSWORD"),
        app_user=_value("APP_DB_USER", "app"),
        app_password=_value("APP_DB_PASSWORD"),
        database=_value("APP_DB_NAME", "appdb"),
        replication_user=_value("REPLICATION_USER", "repl"),
        replication_password=_value("REPLICATION_PASSWORD"),
    )
