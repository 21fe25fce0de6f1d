"""A submission as the graded checks see it: the brief's contract, and nothing more.

The checks know the service names (``db-primary``, ``db-replica``, ``redis``,
``haproxy``), the ``products`` table, the routes, the key ``product:{id}``, and the
credentials of the brief (or those the submission sets). A target says where each
service answers and how to do what the brief asks a student to do by hand: stop
and start a service, run SQL as the database's superuser, edit ``haproxy.cfg`` and
restart HAProxy. What a target cannot do makes the checks that need it "not
gradable", with the reason, rather than passed or failed.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from ..topology import Endpoint

# The brief's credentials (A1): POSTGRESQL_USERNAME, POSTGRESQL_PASSWORD, POSTGRESQL_DATABASE.
BRIEF_USER, BRIEF_PASSWORD, BRIEF_DATABASE = "app", "app_pwd", "appdb"


class NotGradable(Exception):
    """The check cannot run on this submission (the message, in French, says why)."""


class SqlFailed(Exception):
    """A statement the grader ran as the superuser reached the server and failed there."""


@dataclass(frozen=True)
class AppCredentials:
    user: str = BRIEF_USER
    password: str = BRIEF_PASSWORD
    database: str = BRIEF_DATABASE


class Target(abc.ABC):
    """Where a submission's services answer, and the brief's manual operations on them."""

    api_url: str
    app: AppCredentials

    @abc.abstractmethod
    def endpoint(self, service: str) -> Endpoint:
        """Where the service answers (for haproxy: its write frontend)."""

    @abc.abstractmethod
    def declared_services(self) -> list[str]:
        """The services the submission's compose file declares (NotGradable if it has none)."""

    @abc.abstractmethod
    def running_services(self) -> dict[str, bool]:
        """Each declared service: is it running now?"""

    @abc.abstractmethod
    def stop(self, service: str) -> None:
        """As ``docker compose stop SERVICE``."""

    @abc.abstractmethod
    def start(self, service: str) -> None:
        """As ``docker compose start SERVICE``; returns once it answers its protocol."""

    @abc.abstractmethod
    def superuser_sql(self, service: str, query: str) -> list[tuple]:
        """One statement as the database's superuser on a node (NotGradable without such access)."""

    @abc.abstractmethod
    def switch_haproxy_to(self, node: str) -> None:
        """F3 as the brief does it: edit ``server ... db-primary:5432`` in haproxy.cfg, restart HAProxy."""

    @abc.abstractmethod
    def log_hint(self, service: str) -> str:
        """Where a student reads a service's log."""
