"""Grading runs: a target in, a grade and its files out, and nothing left running."""

from __future__ import annotations

import time
from pathlib import Path

from ..api_server import ApiServer
from ..errors import LabError
from ..local.cluster import LocalCluster
from . import outputs, rubric
from .api_process import ApiProcess
from .checks import run_checks
from .compose_target import ComposeSubmission
from .lab_target import LabTarget
from .submission import SubmissionError, load
from .target import NotGradable, Target


# A submission may run its API in the compose file, under this name.
API_SERVICE = "api"


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


def grade_submission(path: Path, out_dir: Path, api_url: str | None = None) -> tuple[rubric.Grade, str]:
    """One submission, from its directory: its stack up, its API started, the checks, and
    everything of it removed. Returns the grade and, if it could not be graded, why."""
    problem = ""
    target = api = None
    try:
        submission = load(path)
        target = ComposeSubmission(submission, out_dir)
        target.up()
        if api_url:
            target.api_url = api_url.rstrip("/")
        elif target.running_services().get(API_SERVICE):
            endpoint = target.endpoint(API_SERVICE)
            target.api_url = f"http://{endpoint.host}:{endpoint.port}"
        else:
            api = ApiProcess(submission.api, target.workdir, out_dir / "api.log", target.run_dir)
            api.start()
            target.api_url = api.url
        grade = grade_target(target)
    except (SubmissionError, NotGradable, LabError) as exc:
        problem = str(exc)
        grade = rubric.grade([], not_run_reason=f"non exécuté : {problem}")
    finally:
        if api is not None:
            api.stop()
        if target is not None:
            target.close()
    return grade, problem


def grade_path(path: Path, out_dir: Path, api_url: str | None = None) -> int:
    started = time.monotonic()
    grade, problem = grade_submission(path, out_dir, api_url)
    if problem:
        print(f"{path}: {problem}")
    print_grade(grade, time.monotonic() - started)
    written = outputs.write_all(grade, out_dir, submission=path.name, problem=problem)
    print(outputs.points_line(grade))
    print("written: " + ", ".join(str(p) for p in written.values()))
    return 0
