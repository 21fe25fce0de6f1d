"""Broken submissions that prove the grader bites: each a reference submission with one
defect, and the checks it must lose written beside it.

A mutant is a small TOML file in ``submissions/mutants/``: the submission it starts from,
the edits that break it (each ``old`` text must occur exactly once, so a drifting base
fails loudly instead of yielding an unbroken "mutant"), and the checks it must lose. It
becomes a real directory, with its compose file and code, which the grader then grades
black-box like any student's: the grader never reads the spec.
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .rubric import BY_ID

SUBMISSIONS = Path(__file__).resolve().parent.parent.parent / "submissions"
MUTANTS = SUBMISSIONS / "mutants"


@dataclass(frozen=True)
class Edit:
    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    base: str
    defect: str
    edits: tuple[Edit, ...]
    loses: frozenset[str]

    def materialize(self, into: Path) -> Path:
        """The broken submission as a directory of its own under ``into``."""
        target = into / self.name
        shutil.copytree(SUBMISSIONS / self.base, target, ignore=shutil.ignore_patterns("node_modules"))
        for edit in self.edits:
            path = target / edit.file
            text = path.read_text()
            if text.count(edit.old) != 1:
                raise ValueError(f"mutant {self.name}: {edit.file} holds {text.count(edit.old)} copies of the text "
                                 f"to replace, not one: {edit.old[:60]!r}")
            path.write_text(text.replace(edit.old, edit.new))
        return target


def load(path: Path) -> Mutant:
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    loses = frozenset(spec["loses"])
    unknown = loses - set(BY_ID)
    if unknown:
        raise ValueError(f"mutant {path.stem} loses checks the rubric does not have: {sorted(unknown)}")
    return Mutant(path.stem, spec["base"], spec["defect"],
                  tuple(Edit(e["file"], e["old"], e["new"]) for e in spec["edit"]), loses)


def all_mutants() -> list[Mutant]:
    return [load(path) for path in sorted(MUTANTS.glob("*.toml"))]
