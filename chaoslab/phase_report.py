"""Where a run's seconds went: per phase, per file and per scenario, from its results file.

    python -m chaoslab phases [reports/results.json] [--before OLD.json] [--top 15]

The phases are the harness's own (chaoslab.phases): baseline restore, API start,
fault, detection, promotion, switch, recovery, checks...; "own" is what a test spent
outside them (its requests and assertions). With ``--before``, each total is shown
beside the same total of an earlier run, so a change's effect is read, not guessed.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .phases import PHASES
from .results import load_results

OWN = "own"


def own_seconds(test: Mapping[str, Any]) -> float:
    """What the test spent outside the harness's phases."""
    return max(0.0, test.get("duration_total_s", 0.0) - sum(test.get("phases", {}).values()))


def phase_totals(tests: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per phase over ``tests``, "own" included, in PHASES' order."""
    totals: dict[str, float] = defaultdict(float)
    for test in tests:
        for name, seconds in test.get("phases", {}).items():
            totals[name] += seconds
        totals[OWN] += own_seconds(test)
    order = [*PHASES, OWN]
    return {name: totals[name] for name in sorted(totals, key=lambda n: order.index(n) if n in order else len(order))}


def file_totals(tests: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, float]]:
    """{test file: (tests, seconds)}, slowest first."""
    totals: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for test in tests:
        entry = totals[test.get("file") or test["nodeid"].split("::")[0]]
        entry[0] += 1
        entry[1] += test.get("duration_total_s", 0.0)
    return {name: (count, seconds) for name, (count, seconds) in
            sorted(totals.items(), key=lambda item: item[1][1], reverse=True)}


def worker_lanes(tests: Iterable[Mapping[str, Any]], run_started_at: str | None) -> dict[str, dict[str, Any]]:
    """{xdist worker: its files in the order it ran them, its busy seconds and when its last
    test ended (seconds after the run began)}, the worker that ended last first. Empty for a
    run in one process, or a results file written before tests said where they ran."""
    try:
        origin = datetime.fromisoformat(run_started_at).timestamp() if run_started_at else None
    except ValueError:
        origin = None
    lanes: dict[str, dict[str, Any]] = {}
    for test in sorted((t for t in tests if t.get("worker") and t.get("started_at") is not None),
                       key=lambda t: t["started_at"]):
        lane = lanes.setdefault(test["worker"], {"files": {}, "busy_s": 0.0, "ended_s": 0.0})
        file = test.get("file") or test["nodeid"].split("::")[0]
        lane["files"][file] = lane["files"].get(file, 0.0) + test.get("duration_total_s", 0.0)
        lane["busy_s"] += test.get("duration_total_s", 0.0)
        if origin is not None:
            lane["ended_s"] = max(lane["ended_s"], test["started_at"] + test.get("duration_total_s", 0.0) - origin)
    return dict(sorted(lanes.items(), key=lambda item: item[1]["ended_s"], reverse=True))


def _short(path: str) -> str:
    """A test file's name without the tests' folder and ".py" (harness/ and unit/ kept: two
    files may share a name)."""
    return path.removeprefix("chaos_tests/").removesuffix(".py")


def _change(now: float, before: float | None) -> str:
    if before is None:
        return ""
    return f"{before:9.1f} {now - before:+9.1f}"


def render(results: Mapping[str, Any], *, before: Mapping[str, Any] | None = None, top: int = 15) -> str:
    tests = results.get("tests", [])
    run = results.get("run", {})
    lines = [f"{len(tests)} tests, {run.get('wall_seconds', 0):.1f} s of wall time on the "
             f"{run.get('backend', '?')} backend ({run.get('started_at', '?')})"]
    if before is not None:
        old_run = before.get("run", {})
        lines.append(f"before: {len(before.get('tests', []))} tests, {old_run.get('wall_seconds', 0):.1f} s "
                     f"({old_run.get('started_at', '?')})")
    if not any("phases" in test for test in tests):
        lines.append("(this results file has no phases: it was written before chaoslab.phases)")

    header = f"{'':<18}{'seconds':>9}" + (f"{'before':>10}{'change':>10}" if before is not None else "")
    lines += ["", "per phase, all tests:", header]
    old_phases = phase_totals(before.get("tests", [])) if before is not None else {}
    for name, seconds in phase_totals(tests).items():
        lines.append(f"  {name:<16}{seconds:9.1f} {_change(seconds, old_phases.get(name, 0.0) if before else None)}")

    lines += ["", "per file (files under a second together at the end):", header]
    old_files = file_totals(before.get("tests", [])) if before is not None else {}
    quick = [0, 0.0, 0.0]
    for name, (count, seconds) in file_totals(tests).items():
        old = old_files.get(name, (0, 0.0))[1] if before is not None else None
        if seconds < 1.0:
            quick = [quick[0] + count, quick[1] + seconds, quick[2] + (old or 0.0)]
            continue
        lines.append(f"  {name:<44}{count:4d} tests {seconds:9.1f} {_change(seconds, old)}")
    if quick[0]:
        lines.append(f"  {'the other files':<44}{quick[0]:4d} tests {quick[1]:9.1f} "
                     f"{_change(quick[1], quick[2] if before is not None else None)}")

    lanes = worker_lanes(tests, run.get("started_at"))
    if lanes:
        lines += ["", "per worker (files in the order it ran them; the run ends with its last worker):"]
        for worker, lane in lanes.items():
            files = ", ".join(f"{_short(name)} {seconds:.0f}" for name, seconds in lane["files"].items())
            lines.append(f"  {worker:<5} ended at {lane['ended_s']:6.1f} s, busy {lane['busy_s']:6.1f} s: {files}")

    old_tests = {test["nodeid"]: test for test in before.get("tests", [])} if before is not None else {}
    slowest = sorted(tests, key=lambda t: t.get("duration_total_s", 0.0), reverse=True)[:top]
    lines += ["", f"slowest {len(slowest)} tests (total: setup + call + teardown), where their time went:"]
    for test in slowest:
        old = old_tests.get(test["nodeid"])
        was = f"   (before {old['duration_total_s']:.1f} s)" if old else ""
        lines.append(f"{test['duration_total_s']:8.1f} s  {test['nodeid']}  [{test.get('outcome', '?')}]{was}")
        parts = [f"{name} {seconds:.2f}" for name, seconds in test.get("phases", {}).items() if seconds >= 0.01]
        parts.append(f"{OWN} {own_seconds(test):.2f}")
        lines.append(f"{'':12}{' · '.join(parts)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab phases", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=Path("reports/results.json"),
                        help="a run's results file (default reports/results.json)")
    parser.add_argument("--before", type=Path, help="an earlier run's results file, to compare with")
    parser.add_argument("--top", type=int, default=15, help="how many of the slowest tests to detail")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
        before = load_results(args.before) if args.before else None
    except (OSError, ValueError) as exc:
        print(f"error: cannot read a results file: {exc}", file=sys.stderr)
        return 2
    print(render(results, before=before, top=max(0, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
