"""The rubric and its outputs: points add up, a check that did not run scores 0, and every
format a grader reads carries the same points."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest

from chaoslab.grader import outputs, rubric
from chaoslab.grader.checks import CHECK_FUNCTIONS
from chaoslab.grader.rubric import FAILED, NOT_RUN, PASSED, CheckResult


def test_the_lines_are_the_briefs_and_their_checks_add_up_to_their_weight():
    assert [(line.label, line.weight) for line in rubric.LINES] == [
        ("Docker & lancement", 3), ("Réplication", 5), ("Cache Redis", 5), ("Résilience", 3),
        ("Haute disponibilité", 4)]
    assert rubric.MAX_POINTS == 20
    for line in rubric.LINES:
        assert sum(c.points for c in rubric.CHECKS if c.line == line.key) == line.weight
    assert set(CHECK_FUNCTIONS) == set(rubric.BY_ID)
    assert all(check.proves and check.evidence for check in rubric.CHECKS)


def test_a_check_with_no_result_did_not_run_and_scores_zero():
    grade = rubric.grade([CheckResult("B1.roles", PASSED)], not_run_reason="not run: -k")
    assert grade.points == 1
    not_run = [r for r in grade.results if r.id != "B1.roles"]
    assert {r.outcome for r in not_run} == {NOT_RUN} and {r.message for r in not_run} == {"not run: -k"}
    assert len(grade.results) == len(rubric.CHECKS)
    with pytest.raises(ValueError, match="does not have"):
        rubric.grade([CheckResult("Z9.invented", PASSED)])


def _sample() -> rubric.Grade:
    results = [CheckResult(c.id, PASSED, {"seen": 1}) for c in rubric.CHECKS]
    results[8] = CheckResult("D2.ttl_in_range", FAILED, {"ttl_s": 600},
                             "TTL de product:1 dans Redis : 600 s, attendu de 30 à 120 s")
    results[1] = CheckResult("A2.stack_up", NOT_RUN, message="non notable : backend local")
    return rubric.grade(results)


def test_every_output_carries_the_same_points():
    grade = _sample()
    assert grade.points == 18
    suite = ET.fromstring(outputs.junit_xml(grade, submission="alice"))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("17", "1", "1")
    ttl = suite.find("testcase[@name='D2.ttl_in_range']")
    assert ttl.find("failure").get("message").startswith("TTL de product:1")
    assert ttl.find("properties/property[@name='evidence']").get("value") == '{"ttl_s": 600}'
    scope = outputs.gradescope(grade)
    assert scope["score"] == 18 and sum(t["score"] for t in scope["tests"]) == 18
    assert sum(t["max_score"] for t in scope["tests"]) == 20
    classroom = json.loads(base64.b64decode(outputs.classroom_base64(grade)))
    assert (classroom["version"], classroom["status"], classroom["max_score"]) == (1, "fail", 20)
    assert sum(t["score"] for t in classroom["tests"]) == 18
    assert outputs.points_line(grade) == "Points 18/20"


def test_feedback_explains_every_lost_point_in_french():
    text = outputs.feedback_markdown(_sample(), "alice")
    assert "Note : **18/20**" in text
    assert "| Cache Redis | 4/5 |" in text and "| Docker & lancement | 2/3 |" in text
    assert "**D2.ttl_in_range** (1 pt, échoué) : La clé a un TTL de 30 à 120 s dans Redis." in text
    assert "Constaté : TTL de product:1 dans Redis : 600 s" in text
    assert "**A2.stack_up** (1 pt, non exécuté)" in text
    assert "B1.roles" not in text
