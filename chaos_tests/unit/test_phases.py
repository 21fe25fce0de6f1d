"""Phases: timed where the harness does them, never counted twice; the report reads them back."""

from __future__ import annotations

import time

import pytest

from chaoslab import phases
from chaoslab.phase_report import OWN, own_seconds, phase_totals, render, worker_lanes


def test_a_phase_inside_another_counts_in_the_outer_one_only():
    with phases.recording() as ledger:
        with phases.phase("baseline"):
            with phases.phase("haproxy config"):
                time.sleep(0.01)
        with phases.phase("fault"):
            pass
    assert set(ledger) == {"baseline", "fault"}
    assert ledger["baseline"] >= 0.01


def test_nothing_is_recorded_outside_a_test_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setattr(phases, "_ledger", None)   # as in the CLI and the grader: no test records
    with phases.phase("fault"):
        pass
    assert phases._ledger is None
    with pytest.raises(ValueError, match="unknown phase"):
        with phases.phase("coffee"):
            pass


def test_a_decorated_function_is_timed_each_call():
    @phases.phase("promotion")
    def promote() -> None:
        time.sleep(0.005)

    with phases.recording() as ledger:
        promote()
        promote()
    assert ledger["promotion"] >= 0.01


def _test(nodeid: str, total: float, **spent: float) -> dict:
    return {"nodeid": nodeid, "file": nodeid.split("::")[0], "outcome": "passed", "duration_total_s": total,
            "phases": {name.replace("_", " "): seconds for name, seconds in spent.items()}}


def test_the_report_splits_each_test_and_compares_with_an_earlier_run():
    now = {"run": {"wall_seconds": 10.0, "backend": "local"},
           "tests": [_test("t.py::a", 6.0, baseline=1.0, api_start=2.0), _test("t.py::b", 4.0, fault=0.5)]}
    before = {"run": {"wall_seconds": 20.0}, "tests": [_test("t.py::a", 12.0, baseline=5.0)]}
    assert own_seconds(now["tests"][0]) == pytest.approx(3.0)
    assert phase_totals(now["tests"]) == pytest.approx({"baseline": 1.0, "api start": 2.0, "fault": 0.5, OWN: 6.5})
    text = render(now, before=before, top=5)
    assert "baseline" in text and "-4.0" in text          # 1.0 s now against 5.0 s before
    assert "(before 12.0 s)" in text
    assert "api start 2.00 · own 3.00" in text


def test_a_results_file_from_before_phases_is_read_and_says_so():
    old = {"run": {}, "tests": [{"nodeid": "t.py::a", "duration_total_s": 2.0}]}
    assert "has no phases" in render(old)


def test_each_worker_s_files_and_end_say_which_one_set_the_run_s_length():
    began = "2026-12-07T10:00:00+00:00"
    t0 = 1796637600.0   # began, in seconds since the epoch
    tests = [dict(_test("long.py::a", 100.0), worker="gw0", started_at=t0 + 1),
             dict(_test("short.py::a", 10.0), worker="gw1", started_at=t0 + 1),
             dict(_test("tail.py::a", 60.0), worker="gw1", started_at=t0 + 11),
             dict(_test("tail.py::b", 50.0), worker="gw1", started_at=t0 + 71)]
    lanes = worker_lanes(tests, began)
    assert list(lanes) == ["gw1", "gw0"]                       # gw1 ended last, at 121 s
    assert lanes["gw1"]["ended_s"] == pytest.approx(121.0)
    assert lanes["gw1"]["files"] == {"short.py": 10.0, "tail.py": 110.0}
    assert lanes["gw1"]["busy_s"] == pytest.approx(120.0)
    assert "gw1   ended at  121.0 s, busy  120.0 s: short 10, tail 110" in render({"run": {"started_at": began},
                                                                                     "tests": tests})
    assert worker_lanes([_test("t.py::a", 1.0)], began) == {}   # one process: no lanes
