"""Everything under chaos_tests/unit is pure logic: `pytest -m unit` runs it alone."""

from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if UNIT_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.unit)
