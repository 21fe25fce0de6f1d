"""The lab's own stack as a grader target: our submission, graded by the same checks.

On the local backend no compose file runs, so the checks of A1 and A2 (the compose
file's services, ``docker compose up``) cannot be judged and score 0 with that reason:
only a compose run may earn the Docker line.
"""

from __future__ import annotations

import psycopg

from .. import pg
from ..api_server import ApiServer
from ..cluster import Cluster
from ..topology import Endpoint
from .target import AppCredentials, NotGradable, SqlFailed, Target

NO_COMPOSE = "backend local : aucun docker-compose.yml n'a été lancé"


class LabTarget(Target):
    def __init__(self, cluster: Cluster, api: ApiServer) -> None:
        self.cluster = cluster
        self.api_url = api.base_url
        creds = cluster.creds
        self.app = AppCredentials(creds.app_user, creds.app_password, creds.database)

    def endpoint(self, service: str) -> Endpoint:
        return self.cluster.endpoint(service)

    def declared_services(self) -> list[str]:
        raise NotGradable(NO_COMPOSE)

    def running_services(self) -> dict[str, bool]:
        raise NotGradable(NO_COMPOSE)

    def stop(self, service: str) -> None:
        self.cluster.stop(service)

    def start(self, service: str) -> None:
        self.cluster.start_service(service)

    def superuser_sql(self, service: str, query: str) -> list[tuple]:
        with pg.connect(self.endpoint(service), self.cluster.creds, role="superuser") as conn:
            try:
                cursor = conn.execute(query)
            except psycopg.Error as exc:
                raise SqlFailed(f"{query} sur {service} : {type(exc).__name__}: {exc}") from None
            return cursor.fetchall() if cursor.description else []

    def switch_haproxy_to(self, node: str) -> None:
        self.cluster.switch_writes(node, "restart")

    def log_hint(self, service: str) -> str:
        return str(self.cluster.log_path(service))
