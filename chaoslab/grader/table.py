"""The class table from graded branches gathered in one directory (one grade.json per branch,
as the class workflow's jobs leave them): ``python -m chaoslab.grader.table DIR [--out DIR]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import rubric
from .batch import Row, write_class_table


def rows_from(directory: Path) -> list[Row]:
    rows = []
    for grade_file in sorted(directory.rglob("grade.json")):
        data = json.loads(grade_file.read_text(encoding="utf-8"))
        results = [rubric.CheckResult(c["id"], c["outcome"], c.get("evidence") or {}, c.get("message") or "",
                                      c.get("seconds") or 0.0) for c in data["checks"]]
        branch = grade_file.parent.relative_to(directory).as_posix()
        rows.append(Row(branch, rubric.grade(results), data.get("problem") or "",
                        round(sum(r.seconds for r in results), 1)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab.grader.table", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where to write grades.csv and grades.md")
    args = parser.parse_args(argv)
    rows = rows_from(args.directory)
    if not rows:
        parser.error(f"no grade.json under {args.directory}")
    for path in write_class_table(rows, args.out or args.directory):
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
