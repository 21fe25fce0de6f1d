"""The compose backend's chores by hand:

  python -m chaoslab.compose reap                   remove the containers, volumes and networks of
                                                    compose runs whose pytest is gone (killed with
                                                    SIGKILL); a new run does the same before it starts
  python -m chaoslab.compose patroni-config [DIR]   render the Patroni nodes' patroni.yml into DIR
                                                    (default build/patroni), for
                                                    `docker compose --profile patroni up -d`; the
                                                    credentials come from the environment, as the
                                                    compose file's do (set -a; . ./.env; set +a)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .project import reap_abandoned_projects

REQUIRED = ("POSTGRES_PASSWORD", "REPLICATION_PASSWORD")


def _reap() -> int:
    reaped = reap_abandoned_projects()
    for project in reaped:
        print(f"reaped {project}")
    if not reaped:
        print("nothing to reap")
    return 0


def _patroni_config(directory: Path) -> int:
    from ..credentials import from_environment
    from ..patroni.config import ETCD, NODES
    from ..topology import Endpoint
    from .patroni import ETCD_PORT, node_files, write_node_config

    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(f"set {', '.join(missing)} first (the same values as the compose file's: set -a; . ./.env; set +a)",
              file=sys.stderr)
        return 2
    creds = from_environment()
    for node in NODES:
        # By service name: compose's DNS resolves them on the project's network.
        path = write_node_config(directory / node, node_files(node, address=node, etcd=Endpoint(ETCD, ETCD_PORT), creds=creds))
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["reap"]:
        return _reap()
    if args[:1] == ["patroni-config"] and len(args) <= 2:
        return _patroni_config(Path(args[1] if len(args) == 2 else "build/patroni"))
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
