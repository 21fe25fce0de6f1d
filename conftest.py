"""The lab's pytest wiring: options, the session's cluster, the per-scenario baseline.

The harness itself lives in the chaoslab package; this file only connects it to pytest.
"""

from __future__ import annotations

import pytest

from chaoslab.backends import BACKENDS, create_cluster
from chaoslab.errors import LabError

pytest_plugins = ["chaoslab.pytest_plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaoslab")
    group.addoption("--backend", choices=sorted(BACKENDS), default="local",
                    help="where the lab runs: real local processes (default) or docker compose")


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest):
    """The whole stack, started once per session and removed at the end (Ctrl-C included)."""
    lab = create_cluster(request.config.getoption("--backend"))
    try:
        lab.start()
    except LabError as exc:
        pytest.fail(f"the lab could not start: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab(cluster):
    """The cluster in its healthy baseline: any scenario can run alone or in any order."""
    try:
        cluster.restore_baseline()
    except LabError as exc:
        pytest.fail(f"the lab could not be restored to its baseline: {exc}", pytrace=False)
    return cluster
