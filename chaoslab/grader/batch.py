"""Grading a class: the branches of a git repository, one after another, and the class table.

Each branch is exported (``git archive``: the files, no history) into a directory of its
own and graded like any submission, each in its own compose project, which is removed
before the next starts. A branch that cannot be graded (it does not exist, has no compose
file, its API never answers) gets its reason in its FEEDBACK.md and in the class table,
0 for what could not run, and the batch goes on.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import outputs, rubric
from .run import grade_submission

GIT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Row:
    branch: str
    grade: rubric.Grade
    problem: str
    seconds: float


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)


def _safe(branch: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", branch).strip("_") or "branch"


def branches_of(clone: Path) -> list[str]:
    done = _git("for-each-ref", "--format=%(refname:lstrip=3)", "refs/remotes/origin", cwd=clone)
    return sorted(name for name in done.stdout.decode().split() if name != "HEAD")


def export(clone: Path, branch: str, into: Path) -> Path | str:
    """The branch's files in ``into``, or why not (in French)."""
    done = _git("archive", "--format=tar", f"refs/remotes/origin/{branch}", cwd=clone)
    if done.returncode != 0:
        return f"la branche {branch} n'existe pas dans le dépôt"
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into


def grade_branches(url: str, branches: list[str] | None, out_dir: Path) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="chaoslab-grade-") as work:
        clone = Path(work) / "clone"
        done = _git("clone", "--quiet", "--no-checkout", url, str(clone))
        if done.returncode != 0:
            raise SystemExit(f"le dépôt {url} ne se clone pas : {done.stderr.decode().strip()[-300:]}")
        for branch in branches if branches is not None else branches_of(clone):
            started = time.monotonic()
            branch_out = out_dir / _safe(branch)
            exported = export(clone, branch, Path(work) / "branches" / _safe(branch))
            if isinstance(exported, str):
                grade, problem = rubric.grade([], not_run_reason=f"non exécuté : {exported}"), exported
            else:
                grade, problem = grade_submission(exported, branch_out)
            outputs.write_all(grade, branch_out, submission=branch, problem=problem)
            row = Row(branch, grade, problem, round(time.monotonic() - started, 1))
            rows.append(row)
            print(f"{branch}: {outputs.points_line(grade)} en {row.seconds:.0f} s" + (f" ({problem})" if problem else ""),
                  flush=True)
    write_class_table(rows, out_dir)
    return rows


def write_class_table(rows: list[Row], out_dir: Path) -> tuple[Path, Path]:
    """grades.csv and grades.md: one row per branch, the points of each line, the total, the time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["branche", *(line.label for line in rubric.LINES), "total", "secondes", "problème"]
    table = [[row.branch, *(rubric.format_points(score.points) for score in row.grade.lines()),
              rubric.format_points(row.grade.points), f"{row.seconds:g}", row.problem] for row in rows]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(table)
    csv_path = out_dir / "grades.csv"
    csv_path.write_text(buffer.getvalue(), encoding="utf-8")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table]
    md_path = out_dir / "grades.md"
    md_path.write_text("# Notes de la classe (/20)\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return csv_path, md_path
