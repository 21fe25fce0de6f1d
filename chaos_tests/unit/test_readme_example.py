"""The README's example scenario stays true to the harness: it compiles, it is short,
and every harness call it makes exists (it was run as a scenario when written)."""

import ast
import re
from pathlib import Path

from chaoslab import api_client
from chaoslab.cluster import Cluster

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_example_scenario_uses_what_the_harness_has():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block, "the README has no example scenario"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 20
    tree = ast.parse(code)
    calls = {(node.func.value.id, node.func.attr) for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name)}
    for owner, attribute in calls:
        if owner == "lab":
            assert hasattr(Cluster, attribute), f"lab.{attribute} is not a Cluster method"
        elif owner == "api_client":
            assert hasattr(api_client, attribute), f"api_client.{attribute} does not exist"
