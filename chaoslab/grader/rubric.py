"""The rubric: every graded check of the TP, as data, and the one place where points are decided.

A check is a row: an id, the TP part, the line of the brief's marking scheme it
counts toward, its points, what it proves (one French sentence for the student),
and the evidence it records. The points of a line add up to the line's weight
(Docker 3, Réplication 5, Cache 5, Résilience 3, Haute disponibilité 4). A check
that did not run scores 0 and says why, so that no selection, crash or missing
access can raise a grade. Bonuses are apart, and nothing the harness does to
itself is ever graded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Line:
    key: str
    label: str
    weight: float


LINES: tuple[Line, ...] = (
    Line("docker", "Docker & lancement", 3),
    Line("replication", "Réplication", 5),
    Line("cache", "Cache Redis", 5),
    Line("resilience", "Résilience", 3),
    Line("ha", "Haute disponibilité", 4),
)
MAX_POINTS = sum(line.weight for line in LINES)


@dataclass(frozen=True)
class Check:
    id: str
    part: str
    line: str
    points: float
    proves: str                      # French, for the student's feedback
    evidence: tuple[str, ...]        # the names of what the check records


CHECKS: tuple[Check, ...] = (
    # -- A. Docker & lancement --------------------------------------------------------------------
    Check("A1.compose_services", "A1", "docker", 1,
          "Le docker-compose.yml se lit et déclare les services db-primary, db-replica, redis et haproxy.",
          ("services",)),
    Check("A2.stack_up", "A2", "docker", 1,
          "`docker compose up -d` démarre les quatre services et ils restent en marche.",
          ("states",)),
    Check("A3.services_answer", "A2", "docker", 1,
          "Chaque service répond à son protocole : SQL sur db-primary, db-replica et haproxy, PING sur redis.",
          ("answers",)),
    # -- B. Réplication -------------------------------------------------------------------------
    Check("B1.roles", "B1", "replication", 1,
          "pg_is_in_recovery() vaut false sur db-primary et true sur db-replica.",
          ("primary_in_recovery", "replica_in_recovery")),
    Check("B2.row_replicates", "B2", "replication", 2,
          "Une ligne de `products` écrite sur le primary apparaît sur la replica en quelques secondes.",
          ("delay_ms",)),
    Check("B3.replica_refuses_writes", "B2", "replication", 1,
          "La replica refuse une écriture (elle est en lecture seule).",
          ("error",)),
    Check("B4.streaming", "B2", "replication", 1,
          "Le primary voit sa replica en streaming (pg_stat_replication).",
          ("pg_stat_replication",)),
    # -- D. Cache Redis -------------------------------------------------------------------------
    Check("D2.key_filled", "D2", "cache", 1,
          "Un GET remplit la clé `product:{id}` dans Redis.",
          ("key", "value")),
    Check("D2.ttl_in_range", "D2", "cache", 1,
          "La clé a un TTL de 30 à 120 s dans Redis.",
          ("ttl_s",)),
    Check("D2.hit_served_from_redis", "D2", "cache", 1,
          "Un second GET est servi par Redis : une ligne changée directement sur le primary ne se voit pas "
          "tant que la clé vit.",
          ("database_price", "api_price")),
    Check("D3.put_invalidates", "D3", "cache", 1,
          "Un PUT supprime la clé (ou la remplace par la nouvelle valeur), et le GET suivant rend la nouvelle "
          "valeur.",
          ("key_after_put", "price_after_put")),
    Check("D1.reads_from_replica", "D1", "cache", 1,
          "Les lectures viennent de la replica : rejeu de la replica en pause, l'API rend l'ancienne valeur "
          "(l'expérience D4 rendue déterministe).",
          ("price_while_replay_paused", "price_after_resume")),
    # -- E. Résilience --------------------------------------------------------------------------
    Check("E1.redis_down", "E1", "resilience", 1.5,
          "Redis arrêté, GET et PUT répondent vite, sans cache, et l'API répond encore ensuite.",
          ("get", "put", "seconds")),
    Check("E2.replica_down", "E2", "resilience", 1.5,
          "Replica arrêtée, un GET répond vite : repli sur le primary ou erreur explicite, jamais d'attente "
          "ni d'API morte.",
          ("get", "seconds")),
    # -- F. Haute disponibilité -----------------------------------------------------------------
    Check("F1.writes_fail_fast", "F1", "ha", 1,
          "Primary arrêté, une écriture échoue vite avec une erreur, sans bloquer l'API.",
          ("put", "seconds")),
    Check("F2.promotion", "F2", "ha", 1,
          "La replica promue (pg_promote()) n'est plus en recovery.",
          ("in_recovery",)),
    Check("F4.writes_after_switch", "F4", "ha", 2,
          "Après promotion et bascule de haproxy.cfg (redémarrage de HAProxy), un PUT par l'API inchangée, "
          "jamais redémarrée, réussit.",
          ("put", "seconds", "node")),
)

BY_ID = {check.id: check for check in CHECKS}


def _validate() -> None:
    """The rubric is data; a typo in it must fail at import, not give a wrong grade."""
    if len(BY_ID) != len(CHECKS):
        raise ValueError("two checks share an id")
    for line in LINES:
        total = sum(check.points for check in CHECKS if check.line == line.key)
        if abs(total - line.weight) > 1e-9:
            raise ValueError(f"the checks of {line.key!r} add up to {total}, not {line.weight}")
    unknown = {check.line for check in CHECKS} - {line.key for line in LINES}
    if unknown:
        raise ValueError(f"checks name unknown lines: {sorted(unknown)}")


_validate()


# -- results ------------------------------------------------------------------------------------
PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"


@dataclass
class CheckResult:
    """What one check found: its outcome, the evidence, and a French message when it lost points."""

    id: str
    outcome: str = NOT_RUN
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0

    @property
    def check(self) -> Check:
        return BY_ID[self.id]

    @property
    def points(self) -> float:
        return self.check.points if self.outcome == PASSED else 0.0


@dataclass(frozen=True)
class LineScore:
    line: Line
    points: float
    results: tuple[CheckResult, ...]


@dataclass(frozen=True)
class Grade:
    """The grade of one submission: every check of the rubric, run or not."""

    results: tuple[CheckResult, ...]

    @property
    def points(self) -> float:
        return sum(result.points for result in self.results)

    @property
    def max_points(self) -> float:
        return MAX_POINTS

    def lines(self) -> list[LineScore]:
        return [LineScore(line, sum(r.points for r in self.results if r.check.line == line.key),
                          tuple(r for r in self.results if r.check.line == line.key)) for line in LINES]


def grade(results: Iterable[CheckResult], not_run_reason: str = "not run") -> Grade:
    """Every check of the rubric, in rubric order: a check with no result did not run and scores 0."""
    found: Mapping[str, CheckResult] = {result.id: result for result in results}
    unknown = set(found) - set(BY_ID)
    if unknown:
        raise ValueError(f"results for checks the rubric does not have: {sorted(unknown)}")
    return Grade(tuple(found.get(check.id) or CheckResult(check.id, NOT_RUN, message=not_run_reason)
                       for check in CHECKS))


def format_points(value: float) -> str:
    """At most two decimals, no trailing zeros: ``3``, ``1.5``."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
