"""The grader on whole submissions, in containers: the reference submissions get 20/20, and
every mutant loses exactly the checks written beside it; every check of the rubric is
failed by at least one mutant.

Graded black-box, one submission after another (they publish the brief's ports), each in
a compose project of its own that is removed afterwards. Runs with ``--backend compose``
(scripts/compose-suite.sh); the images are the local stand-ins where no registry answers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chaoslab.grader import rubric
from chaoslab.grader.mutants import SUBMISSIONS, all_mutants
from chaoslab.grader.run import grade_submission

pytestmark = pytest.mark.submissions

REPO = Path(__file__).resolve().parent.parent
REFERENCES = {"brief-student": SUBMISSIONS / "brief-student", "this-repository": REPO}
MUTANTS = {mutant.name: mutant for mutant in all_mutants()}
LOST_BY_MUTANT: dict[str, set[str]] = {}


def _graded(path: Path, out_dir: Path, measure) -> rubric.Grade:
    grade, problem = grade_submission(path, out_dir)
    measure("grade_points", grade.points)
    assert not problem, f"{path.name} could not be graded: {problem}"
    return grade


def _lost(grade: rubric.Grade) -> set[str]:
    return {result.id for result in grade.results if result.outcome != rubric.PASSED}


@pytest.mark.parametrize("name", list(REFERENCES))
def test_a_reference_submission_gets_every_point(name, tmp_path, measure):
    grade = _graded(REFERENCES[name], tmp_path / "out", measure)
    assert grade.points == rubric.MAX_POINTS, {r.id: r.message for r in grade.results if r.outcome != rubric.PASSED}


@pytest.mark.parametrize("name", list(MUTANTS))
def test_a_mutant_loses_exactly_its_checks(name, tmp_path, measure):
    mutant = MUTANTS[name]
    grade = _graded(mutant.materialize(tmp_path), tmp_path / "out", measure)
    lost = _lost(grade)
    LOST_BY_MUTANT[name] = lost
    measure("lost_checks", ",".join(sorted(lost)))
    assert lost == set(mutant.loses), (
        f"{name} ({mutant.defect}): lost {sorted(lost)}, expected {sorted(mutant.loses)}; "
        f"{ {r.id: r.message for r in grade.results if r.id in lost ^ set(mutant.loses)} }")
    assert grade.points == rubric.MAX_POINTS - sum(rubric.BY_ID[check].points for check in mutant.loses)


BROKEN = {
    "compose file that does not parse": ("services:\n  db-primary: [\n", "ne se lit pas"),
    "image that cannot be pulled": ("services:\n  db-primary:\n    image: chaoslab-does-not-exist:1\n",
                                    "n'a démarré aucun service"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_submission_that_cannot_start_scores_zero_with_its_reason(case, tmp_path):
    compose, reason = BROKEN[case]
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "docker-compose.yml").write_text(compose)
    grade, problem = grade_submission(tmp_path / "submission", tmp_path / "out")
    assert reason in problem
    assert grade.points == 0 and {r.outcome for r in grade.results} == {rubric.NOT_RUN}


def test_an_api_that_never_answers_ends_the_grading_with_its_reason(tmp_path):
    """The stack starts, the API exits at once: 0 for every check, the reason and the API's log
    in the feedback, and nothing of the submission left running."""
    submission = tmp_path / "submission"
    shutil.copytree(SUBMISSIONS / "brief-student", submission, ignore=shutil.ignore_patterns("node_modules"))
    (submission / "chaoslab-submission.toml").write_text('[api]\ncommand = "echo oops >&2; exit 3"\nport = 3000\n')
    grade, problem = grade_submission(submission, tmp_path / "out")
    assert "l'API s'est arrêtée au démarrage (code 3" in problem and grade.points == 0
    assert "oops" in (tmp_path / "out" / "api.log").read_text()


def test_every_check_is_failed_by_a_mutant(capsys):
    """The table check -> the mutants that fail it, from this run's gradings."""
    missing = sorted(set(MUTANTS) - set(LOST_BY_MUTANT))
    assert not missing, f"mutants not graded in this run: {missing}"
    table = {check.id: sorted(name for name, lost in LOST_BY_MUTANT.items() if check.id in lost)
             for check in rubric.CHECKS}
    with capsys.disabled():
        print("\ncheck -> mutants that fail it")
        for check, names in table.items():
            print(f"  {check:<28} {', '.join(names) or '-'}")
    uncovered = [check for check, names in table.items() if not names]
    assert not uncovered, f"checks that no mutant fails: {uncovered}"
