"""The compose backend's labs run without healthchecks, and so nothing in them may wait for one:
a `depends_on: service_healthy` left on a service whose dependency never gets checked would
hold `docker compose up` until its timeout. Read from the repository's own docker-compose.yml."""

from __future__ import annotations

import yaml

from chaoslab.compose import project
from chaoslab.compose.stack import COMPOSE_FILE

DECLARED = yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def _merged_conditions(service: str, override: dict) -> dict[str, str]:
    """Each dependency's condition once the override is merged over the file (compose merges
    depends_on by dependency)."""
    declared = DECLARED[service].get("depends_on") or {}
    if isinstance(declared, list):
        declared = {name: {"condition": "service_started"} for name in declared}
    merged = {name: dict(how or {}) for name, how in declared.items()}
    for name, how in override.get("depends_on", {}).items():
        merged.setdefault(name, {}).update(how)
    return {name: how.get("condition", "service_started") for name, how in merged.items()}


def test_no_service_of_a_lab_waits_for_a_health_nobody_checks():
    entries = project.without_healthchecks(COMPOSE_FILE, list(DECLARED))
    waiting = {service: conditions for service in DECLARED
               if "service_healthy" in (conditions := _merged_conditions(service, entries[service])).values()}
    assert waiting == {}, f"still waiting for a healthcheck the lab puts a day away: {waiting}"


def test_the_file_itself_still_waits_for_the_database_nodes():
    """What `docker compose up` by hand (and the grading of this repository) relies on."""
    assert _merged_conditions("haproxy", {}) == {"db-primary": "service_healthy", "db-replica": "service_healthy"}
    assert _merged_conditions("db-replica", {}) == {"db-primary": "service_healthy"}


def test_every_healthcheck_of_a_lab_is_put_off():
    entries = project.without_healthchecks(COMPOSE_FILE, ["db-primary", "redis", "faultproxy"])
    assert {service: entry["healthcheck"] for service, entry in entries.items()} == {
        service: {"interval": project.HEALTHCHECKS_OFF_INTERVAL} for service in ("db-primary", "redis", "faultproxy")}
