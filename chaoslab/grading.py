"""The TP's marking scheme (/20), computed from test outcomes.

Pure functions: no pytest, no I/O. A test is any mapping with an ``outcome``
(``passed``, ``failed``, ``error`` or ``skipped``) and ``markers`` (a list of
marker names), the shape of the entries of ``results.json``.

A line of the scheme earns ``weight * passed / total`` over the tests that
carry one of its markers; a test counts once for every line it maps to.
Failed, errored and skipped tests earn nothing. Bonuses are shown apart, as
passed/total, and never added to the /20.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

NOT_RUN = "non exécuté"


@dataclass(frozen=True)
class LineSpec:
    key: str
    label: str
    weight: float
    markers: tuple[str, ...]


@dataclass(frozen=True)
class BonusSpec:
    key: str
    label: str
    marker: str


SCHEME: tuple[LineSpec, ...] = (
    LineSpec("docker", "Docker & lancement", 3, ("setup", "haproxy")),
    LineSpec("replication", "Réplication", 5, ("replication",)),
    LineSpec("cache", "Cache Redis", 5, ("cache",)),
    LineSpec("resilience", "Résilience", 3, ("resilience",)),
    LineSpec("ha", "Haute disponibilité", 4, ("failover",)),
)

BONUSES: tuple[BonusSpec, ...] = (
    BonusSpec("stampede", "Anti cache-stampede", "stampede"),
    BonusSpec("patroni", "Failover automatique (Patroni)", "patroni"),
    BonusSpec("sentinel", "HA Redis (Sentinel)", "sentinel"),
)

MAX_POINTS: float = sum(line.weight for line in SCHEME)

#: Every marker the lab gives a meaning to, scheme lines then bonuses.
LAB_MARKERS: tuple[str, ...] = tuple(
    dict.fromkeys([m for line in SCHEME for m in line.markers] + [b.marker for b in BONUSES])
)


@dataclass
class LineResult:
    key: str
    label: str
    weight: float
    markers: tuple[str, ...]
    passed: int = 0
    total: int = 0

    @property
    def executed(self) -> bool:
        return self.total > 0

    @property
    def points(self) -> float:
        return self.weight * self.passed / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "weight": self.weight,
            "markers": list(self.markers),
            "passed": self.passed,
            "total": self.total,
            "executed": self.executed,
            "points": round(self.points, 4),
        }


@dataclass
class BonusResult:
    key: str
    label: str
    marker: str
    passed: int = 0
    total: int = 0

    @property
    def executed(self) -> bool:
        return self.total > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "marker": self.marker,
            "passed": self.passed,
            "total": self.total,
            "executed": self.executed,
        }


@dataclass
class Grade:
    lines: list[LineResult]
    bonuses: list[BonusResult]
    max_points: float = MAX_POINTS
    counted_tests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def points(self) -> float:
        return sum(line.points for line in self.lines)

    def line(self, key: str) -> LineResult:
        return next(line for line in self.lines if line.key == key)

    def bonus(self, key: str) -> BonusResult:
        return next(bonus for bonus in self.bonuses if bonus.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": round(self.points, 4),
            "max_points": self.max_points,
            "display": f"{format_points(self.points)}/{format_points(self.max_points)}",
            "lines": [line.to_dict() for line in self.lines],
            "bonuses": [bonus.to_dict() for bonus in self.bonuses],
            "table": self.text_table(),
        }

    def text_table(self) -> str:
        return text_table(self)

    def markdown_table(self) -> str:
        return markdown_table(self)


def _passed(test: Mapping[str, Any]) -> bool:
    return test.get("outcome") == "passed"


def compute_grade(tests: Iterable[Mapping[str, Any]]) -> Grade:
    """Grade a run. ``tests``: mappings with ``outcome`` and ``markers``."""
    lines = [LineResult(s.key, s.label, s.weight, s.markers) for s in SCHEME]
    bonuses = [BonusResult(b.key, b.label, b.marker) for b in BONUSES]
    outcomes: dict[str, int] = {}
    counted = 0
    for test in tests:
        markers = set(test.get("markers") or ())
        outcome = str(test.get("outcome"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        mapped = False
        for line in lines:
            if markers.intersection(line.markers):
                mapped = True
                line.total += 1
                line.passed += _passed(test)
        for bonus in bonuses:
            if bonus.marker in markers:
                mapped = True
                bonus.total += 1
                bonus.passed += _passed(test)
        counted += mapped
    return Grade(lines=lines, bonuses=bonuses, counted_tests=counted, outcomes=outcomes)


def grade_from_dict(data: Mapping[str, Any]) -> Grade:
    """Rebuild a :class:`Grade` from :meth:`Grade.to_dict` output."""
    lines = [
        LineResult(d["key"], d["label"], d["weight"], tuple(d["markers"]), d["passed"], d["total"])
        for d in data["lines"]
    ]
    bonuses = [
        BonusResult(d["key"], d["label"], d["marker"], d["passed"], d["total"])
        for d in data["bonuses"]
    ]
    return Grade(lines=lines, bonuses=bonuses, max_points=data.get("max_points", MAX_POINTS))


def format_points(value: float) -> str:
    """At most two decimals, no trailing zeros: ``3``, ``2.5``, ``3.33``."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _line_cells(line: LineResult) -> tuple[str, str]:
    if not line.executed:
        return NOT_RUN, f"0/{format_points(line.weight)}"
    return (
        f"{line.passed}/{line.total}",
        f"{format_points(line.points)}/{format_points(line.weight)}",
    )


def _bonus_cell(bonus: BonusResult) -> str:
    return f"{bonus.passed}/{bonus.total} réussis" if bonus.executed else NOT_RUN


def text_table(grade: Grade) -> str:
    """A fixed-width table for terminals and JUnit properties."""
    rows = [("Barème /20", "tests réussis", "points")]
    rows += [(line.label, *_line_cells(line)) for line in grade.lines]
    total = ("Total", "", f"{format_points(grade.points)}/{format_points(grade.max_points)}")
    widths = [max(len(r[i]) for r in rows + [total]) for i in range(3)]

    def fmt(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}".rstrip()

    rule = "-" * (sum(widths) + 4)
    out = [fmt(rows[0]), rule, *(fmt(r) for r in rows[1:]), rule, fmt(total), ""]
    out.append("Bonus (hors barème)")
    label_width = max(len(b.label) for b in grade.bonuses)
    out += [f"{b.label:<{label_width}}  {_bonus_cell(b)}" for b in grade.bonuses]
    return "\n".join(out)


def markdown_table(grade: Grade) -> str:
    """The same table in Markdown, for the French ``report.md`` (decimal comma)."""

    def fr(text: str) -> str:
        return text.replace(".", ",")

    out = [
        "| Critère | Tests réussis | Points |",
        "|---|---:|---:|",
    ]
    for line in grade.lines:
        tests, points = _line_cells(line)
        out.append(f"| {line.label} | {tests} | {fr(points)} |")
    out.append(
        f"| **Total** | | **{fr(format_points(grade.points))}/{format_points(grade.max_points)}** |"
    )
    out += ["", "| Bonus (hors barème) | Tests réussis |", "|---|---:|"]
    out += [f"| {b.label} | {_bonus_cell(b)} |" for b in grade.bonuses]
    return "\n".join(out)
