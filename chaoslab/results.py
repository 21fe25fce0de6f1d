"""The results file of a run (``reports/results.json``): its shape and readers.

No pytest here: the plugin fills a :class:`TestRecord` per test and calls
:func:`write_results`; ``report.py`` reads the file back with
:func:`load_results` and finds figures with :func:`find_tests`,
:func:`value` and :func:`attachment`.

Layout (``schema`` 2; 1 also held a grade from test outcomes, now the grader's alone)::

    {
      "schema": 1,
      "run": {"backend", "started_at", "finished_at", "wall_seconds", "python",
              "pytest", "platform", "argv", "rootdir", "exit_status",
              "versions": {"postgresql": ..., "redis": ..., "haproxy": ...},
              ...any key given by set_run_info()},
      "summary": {"total", "passed", "failed", "error", "skipped"},
      "tests": [TestRecord.to_dict(), ...]
    }
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_VERSION = 2
# The markers a test's record keeps: the TP's parts and the bonuses (the report finds its
# figures by them); pytest.ini registers them with their meaning.
SCENARIO_MARKERS: tuple[str, ...] = ("setup", "replication", "haproxy", "cache", "resilience", "network", "failover",
                                     "stampede", "patroni", "sentinel")
OUTCOMES = ("passed", "failed", "error", "skipped")


def json_safe(value: Any) -> Any:
    """Values JSON can hold: non-finite floats become ``None``, the rest ``str``."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:  # numpy scalars and the like
        return json_safe(value.item())
    except AttributeError:
        return str(value)


@dataclass
class TestRecord:
    """What one test did. Filled phase by phase by the pytest plugin."""

    nodeid: str
    name: str = ""
    file: str = ""
    param_id: str | None = None
    markers: list[str] = field(default_factory=list)
    outcome: str = "passed"
    failed_phase: str | None = None
    message: str | None = None
    duration_setup_s: float = 0.0
    duration_call_s: float = 0.0
    duration_teardown_s: float = 0.0
    duration_total_s: float = 0.0
    # Seconds per harness phase (chaoslab.phases), setup and teardown included.
    phases: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    attachments: dict[str, str] = field(default_factory=dict)
    properties: list[list[Any]] = field(default_factory=list)
    # Which xdist worker ran it (None: the run had one process), and when its setup began
    # (seconds since the epoch): where a parallel run's wall time went, worker by worker.
    worker: str | None = None
    started_at: float | None = None

    def add_measurement(self, name: str, value: Any, unit: str = "") -> None:
        self.measurements[name] = {"value": json_safe(value), "unit": unit}

    def take_from_worker(self, data: Mapping[str, Any]) -> None:
        """What an xdist worker recorded of this test (the controller only sees its reports)."""
        self.name, self.file, self.param_id = data["name"], data["file"], data["param_id"]
        self.markers = list(data["markers"])
        self.measurements = dict(data["measurements"])
        self.attachments = dict(data["attachments"])
        self.phases = dict(data["phases"])
        self.worker, self.started_at = data.get("worker"), data.get("started_at")

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "name": self.name,
            "file": self.file,
            "param_id": self.param_id,
            "markers": list(self.markers),
            "outcome": self.outcome,
            "failed_phase": self.failed_phase,
            "message": self.message,
            "duration_setup_s": round(self.duration_setup_s, 6),
            "duration_call_s": round(self.duration_call_s, 6),
            "duration_teardown_s": round(self.duration_teardown_s, 6),
            "duration_total_s": round(self.duration_total_s, 6),
            "phases": {name: round(seconds, 6) for name, seconds in self.phases.items()},
            "measurements": self.measurements,
            "attachments": self.attachments,
            "properties": [[str(n), json_safe(v)] for n, v in self.properties],
            "worker": self.worker,
            "started_at": None if self.started_at is None else round(self.started_at, 3),
        }


def summarize(tests: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {outcome: 0 for outcome in OUTCOMES}
    total = 0
    for test in tests:
        total += 1
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
    return {"total": total, **counts}


def write_results(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- lookups used by the report -------------------------------------------


def find_tests(
    results: Mapping[str, Any],
    marker: str | None = None,
    prop: str | None = None,
) -> list[dict[str, Any]]:
    """Tests carrying ``marker`` (if given) and measuring ``prop`` (if given)."""
    found = []
    for test in results.get("tests", []):
        if marker is not None and marker not in test.get("markers", ()):
            continue
        if prop is not None and value(test, prop) is None and attachment(test, prop) is None:
            continue
        found.append(test)
    return found


def value(test: Mapping[str, Any], name: str) -> Any:
    """A measured figure of ``test``, or ``None``. Falls back to raw properties."""
    measured = test.get("measurements", {}).get(name)
    if measured is not None:
        return measured.get("value")
    for prop_name, prop_value in reversed(test.get("properties", [])):
        if prop_name == name:
            return prop_value
    return None


def unit(test: Mapping[str, Any], name: str) -> str:
    return test.get("measurements", {}).get(name, {}).get("unit", "") or ""


def attachment(test: Mapping[str, Any], name: str) -> str | None:
    return test.get("attachments", {}).get(name)


def first_value(tests: Iterable[Mapping[str, Any]], name: str) -> Any:
    """The first non-missing value of ``name`` across ``tests``."""
    for test in tests:
        found = value(test, name)
        if found is not None:
            return found
    return None
