"""Grading runs: a target in, a grade and its files out, and nothing left running."""

from __future__ import annotations

import time
from pathlib import Path

from ..api_server import ApiServer
from ..local.cluster import LocalCluster
from . import outputs, rubric
from .checks import run_checks
from .lab_target import LabTarget
from .target import Target


def grade_target(target: Target) -> rubric.Grade:
    return rubric.grade(run_checks(target))


def print_grade(grade: rubric.Grade, seconds: float) -> None:
    width = max(len(result.id) for result in grade.results)
    for result in grade.results:
        points = f"{rubric.format_points(result.points)}/{rubric.format_points(result.check.points)}"
        print(f"  {result.id:<{width}}  {points:>7}  {result.outcome:<8} {result.message[:100]}")
    for score in grade.lines():
        print(f"{score.line.label:<22} {rubric.format_points(score.points):>5}/{rubric.format_points(score.line.weight)}")
    print(f"{outputs.points_line(grade)}  (graded in {seconds:.0f} s)")


def grade_the_lab(out_dir: Path) -> int:
    """This lab's own stack on local processes, with its API, graded like any submission."""
    started = time.monotonic()
    cluster = LocalCluster()
    api = None
    try:
        cluster.start()
        api = ApiServer(cluster)
        api.ensure()
        grade = grade_target(LabTarget(cluster, api))
    finally:
        if api is not None:
            api.close()
        cluster.close()
    print_grade(grade, time.monotonic() - started)
    written = outputs.write_all(grade, out_dir, submission="chaoslab (backend local)")
    print("written: " + ", ".join(str(path) for path in written.values()))
    return 0
