"""A grade in the formats graders already read, and a feedback page for the student.

- JUnit XML: one test case per check, with points, max points and evidence as properties;
  a check that lost its points is a failure, one that did not run is skipped, with why.
- Gradescope's ``results.json``: top-level ``score``, one test per check with ``score``,
  ``max_score``, ``name``, ``output`` and ``status``.
- GitHub Classroom's autograding result: the base64 of ``{version, status, max_score,
  tests}`` that ``autograding-grading-reporter`` reads from ``<RUNNER>_RESULTS``, each
  test with its ``score``; and the ``Points X/Y`` line that the reporter prints.
- ``FEEDBACK.md``, in French: the table per line of the marking scheme, then every lost
  point with what was seen.

Pure functions of a Grade: no I/O here but ``write_all``.
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .rubric import FAILED, LINES, NOT_RUN, PASSED, CheckResult, Grade, format_points

STATUS_FR = {PASSED: "réussi", FAILED: "échoué", NOT_RUN: "non exécuté"}


def _fr(value: float) -> str:
    return format_points(value).replace(".", ",")


def _evidence_text(result: CheckResult) -> str:
    return json.dumps(result.evidence, ensure_ascii=False, default=str)


def _output(result: CheckResult) -> str:
    """What a student reads for one check: what it proves, the verdict, what was seen."""
    lines = [result.check.proves, f"{STATUS_FR[result.outcome]} : {_fr(result.points)}/{_fr(result.check.points)}"]
    if result.message:
        lines.append(result.message)
    if result.evidence:
        lines.append(f"preuves : {_evidence_text(result)}")
    return "\n".join(lines)


def junit_xml(grade: Grade, suite: str = "chaoslab-grader", submission: str = "") -> str:
    testsuite = ET.Element("testsuite", name=suite, tests=str(len(grade.results)),
                           failures=str(sum(r.outcome == FAILED for r in grade.results)),
                           skipped=str(sum(r.outcome == NOT_RUN for r in grade.results)),
                           time=f"{sum(r.seconds for r in grade.results):.2f}")
    properties = ET.SubElement(testsuite, "properties")
    for name, value in (("submission", submission), ("grade", f"{format_points(grade.points)}/"
                                                                f"{format_points(grade.max_points)}"),
                        *((f"grade.{score.line.key}", f"{format_points(score.points)}/"
                                                      f"{format_points(score.line.weight)}")
                          for score in grade.lines())):
        ET.SubElement(properties, "property", name=name, value=value)
    for result in grade.results:
        case = ET.SubElement(testsuite, "testcase", classname=f"rubric.{result.check.line}", name=result.id,
                             time=f"{result.seconds:.2f}")
        case_properties = ET.SubElement(case, "properties")
        for name, value in (("points", format_points(result.points)), ("max_points", format_points(result.check.points)),
                            ("proves", result.check.proves), ("evidence", _evidence_text(result))):
            ET.SubElement(case_properties, "property", name=name, value=value)
        if result.outcome == FAILED:
            ET.SubElement(case, "failure", message=result.message).text = _output(result)
        elif result.outcome == NOT_RUN:
            ET.SubElement(case, "skipped", message=result.message or "not run")
    ET.indent(testsuite)
    return ET.tostring(testsuite, encoding="unicode", xml_declaration=True) + "\n"


def gradescope(grade: Grade) -> dict[str, Any]:
    return {
        "score": round(grade.points, 2),
        "output": f"Note : {_fr(grade.points)}/{_fr(grade.max_points)}",
        "tests": [{"name": f"{r.id} — {r.check.proves}", "number": r.id, "score": r.points,
                   "max_score": r.check.points, "status": "passed" if r.outcome == PASSED else "failed",
                   "output": _output(r)} for r in grade.results],
    }


def classroom(grade: Grade) -> dict[str, Any]:
    """The runner result GitHub Classroom's reporter reads (before base64)."""
    statuses = {PASSED: "pass", FAILED: "fail", NOT_RUN: "error"}
    return {
        "version": 1,
        "status": "pass" if all(r.outcome == PASSED for r in grade.results) else "fail",
        "max_score": grade.max_points,
        "tests": [{"name": r.id, "status": statuses[r.outcome], "score": r.points, "message": r.message or None,
                   "line_no": 0, "execution_time": f"{r.seconds:.2f}s"} for r in grade.results],
    }


def classroom_base64(grade: Grade) -> str:
    return base64.b64encode(json.dumps(classroom(grade), ensure_ascii=False).encode()).decode()


def points_line(grade: Grade) -> str:
    """The line GitHub Classroom's reporter prints, and that its grade is read from."""
    return f"Points {format_points(grade.points)}/{format_points(grade.max_points)}"


def line_table(grade: Grade) -> str:
    rows = ["| Critère | Points |", "|---|---:|"]
    rows += [f"| {score.line.label} | {_fr(score.points)}/{_fr(score.line.weight)} |" for score in grade.lines()]
    rows.append(f"| **Total** | **{_fr(grade.points)}/{_fr(grade.max_points)}** |")
    return "\n".join(rows)


def feedback_markdown(grade: Grade, submission: str = "", problem: str = "") -> str:
    """FEEDBACK.md, for the student: the grade per line, then each lost point and its evidence."""
    parts = [f"# Correction du TP — {submission}".rstrip(" —"), "",
             f"Note : **{_fr(grade.points)}/{_fr(grade.max_points)}**", ""]
    if problem:
        parts += [f"> {problem}", ""]
    parts += [line_table(grade), ""]
    lost = [r for r in grade.results if r.outcome != PASSED]
    if not lost:
        parts.append("Tous les contrôles sont réussis.")
    for line in LINES:
        results = [r for r in lost if r.check.line == line.key]
        if not results:
            continue
        parts += [f"## {line.label}", ""]
        for result in results:
            parts.append(f"- **{result.id}** ({_fr(result.check.points)} pt, {STATUS_FR[result.outcome]}) : "
                         f"{result.check.proves}")
            if result.message:
                parts.append(f"  - Constaté : {result.message}")
            if result.evidence:
                parts.append(f"  - Preuves : `{_evidence_text(result)}`")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def grade_json(grade: Grade, submission: str = "", problem: str = "") -> dict[str, Any]:
    """The grade as this project reads it back (the report's section on the marking scheme)."""
    return {
        "submission": submission, "problem": problem,
        "points": grade.points, "max_points": grade.max_points,
        "lines": [{"key": s.line.key, "label": s.line.label, "points": s.points, "weight": s.line.weight}
                  for s in grade.lines()],
        "checks": [{"id": r.id, "line": r.check.line, "points": r.points, "max_points": r.check.points,
                    "outcome": r.outcome, "proves": r.check.proves, "message": r.message, "evidence": r.evidence,
                    "seconds": r.seconds} for r in grade.results],
    }


def write_all(grade: Grade, out_dir: Path, submission: str = "", problem: str = "") -> dict[str, Path]:
    """Every output of one submission into ``out_dir``; returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "junit": (out_dir / "junit.xml", junit_xml(grade, submission=submission)),
        "gradescope": (out_dir / "results.json", json.dumps(gradescope(grade), ensure_ascii=False, indent=2) + "\n"),
        "classroom": (out_dir / "classroom-result.txt", classroom_base64(grade) + "\n"),
        "feedback": (out_dir / "FEEDBACK.md", feedback_markdown(grade, submission, problem)),
        "grade": (out_dir / "grade.json", json.dumps(grade_json(grade, submission, problem), ensure_ascii=False,
                                                     indent=2, default=str) + "\n"),
    }
    for path, text in files.values():
        path.write_text(text, encoding="utf-8")
    return {name: path for name, (path, _) in files.items()}
