"""Clean-up by hand: ``python -m chaoslab.compose reap`` removes the containers,
volumes and networks of compose runs whose pytest is gone (killed with SIGKILL).
A new run does the same before it starts."""

from __future__ import annotations

import sys

from .project import reap_abandoned_projects


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["reap"]:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    reaped = reap_abandoned_projects()
    for project in reaped:
        print(f"reaped {project}")
    if not reaped:
        print("nothing to reap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
