"""Grading the branches of a repository: a branch that cannot be graded gets 0 and its reason,
in its FEEDBACK.md and in the class table, and the batch goes on (no Docker needed here:
none of these branches gets as far as a compose project)."""

from __future__ import annotations

import csv
import subprocess

from chaoslab.grader.batch import grade_branches


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_branches_that_cannot_be_graded_get_zero_and_their_reason(tmp_path):
    repo = tmp_path / "class"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "teacher")
    (repo / "README.md").write_text("rendu sans compose\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "no compose file")
    _git(repo, "branch", "alice/tp")
    out = tmp_path / "grades"
    rows = grade_branches(str(repo), ["alice/tp", "bob"], out)
    assert [(row.branch, row.grade.points) for row in rows] == [("alice/tp", 0), ("bob", 0)]
    assert "aucun fichier docker-compose.yml" in rows[0].problem
    assert rows[1].problem == "la branche bob n'existe pas dans le dépôt"
    assert "aucun fichier docker-compose.yml" in (out / "alice_tp" / "FEEDBACK.md").read_text()
    table = list(csv.reader((out / "grades.csv").open()))
    assert table[0][:2] == ["branche", "Docker & lancement"] and table[0][-3:] == ["total", "secondes", "problème"]
    assert [row[0] for row in table[1:]] == ["alice/tp", "bob"] and {row[-3] for row in table[1:]} == {"0"}
    assert "| bob | 0 | 0 | 0 | 0 | 0 | 0 |" in (out / "grades.md").read_text()
    every = grade_branches(str(repo), None, tmp_path / "all")
    assert [row.branch for row in every] == ["alice/tp", "main"]


def test_the_class_table_from_the_grades_of_separate_jobs(tmp_path):
    from chaoslab.grader import outputs, rubric
    from chaoslab.grader.table import main

    for branch, failed in (("alice", "D2.ttl_in_range"), ("team/bob", "F4.writes_after_switch")):
        results = [rubric.CheckResult(c.id, rubric.FAILED if c.id == failed else rubric.PASSED) for c in rubric.CHECKS]
        outputs.write_all(rubric.grade(results), tmp_path / "jobs" / branch, submission="submission")
    assert main([str(tmp_path / "jobs"), "--out", str(tmp_path / "table")]) == 0
    rows = list(csv.reader((tmp_path / "table" / "grades.csv").open()))
    assert [(row[0], row[-3]) for row in rows[1:]] == [("alice", "19"), ("team/bob", "18")]
