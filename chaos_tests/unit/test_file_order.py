"""The order in which `make test`'s workers are handed files (conftest.LONGEST_FIRST) names
files that exist: a renamed file would silently lose its place and be handed out last."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _root_conftest():
    # By its path: `import conftest` here finds chaos_tests/unit/conftest.py.
    spec = importlib.util.spec_from_file_location("chaoslab_root_conftest", REPO / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_file_in_the_order_exists_once():
    LONGEST_FIRST = _root_conftest().LONGEST_FIRST
    missing = [path for path in LONGEST_FIRST if not (REPO / path).is_file()]
    assert missing == [], f"conftest.LONGEST_FIRST names files that do not exist: {missing}"
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST), "conftest.LONGEST_FIRST names a file twice"
