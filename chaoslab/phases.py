"""Where a scenario's time goes: named phases, timed where the harness does them.

The harness wraps its steps in ``phase("baseline")``, ``phase("promotion")``... and
the pytest plugin gives each test a fresh ledger (:func:`recording`), so the results
file holds, per test, the seconds spent in each phase beside pytest's setup, call and
teardown. ``python -m chaoslab phases`` prints them (chaoslab.phase_report).

A phase entered inside another is counted in the outer one only: the phases of a test
never overlap, and what they leave is the scenario's own time (its requests, its
assertions). Outside a test (the CLI, the grader) nothing is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# In the order a scenario goes through them; the report's columns follow it.
PHASES: dict[str, str] = {
    "lab start": "starting the session's servers (once per session, in the first test's setup)",
    "baseline": "restoring the healthy baseline before a scenario",
    "api start": "starting or restarting the API, and waiting until it is ready",
    "haproxy config": "installing another HAProxy configuration and waiting for its checks",
    "fault": "injecting a fault (stop, kill, pause, resume, start)",
    "fault held": "holding a fault as long as the scenario needs it (a pause, an outage), watched",
    "detection": "from the fault to the operator's first action: seeing writes refused, reads served",
    "promotion": "promoting a standby, until it says it is no longer in recovery",
    "election": "Patroni replacing its leader: the lease running out, a standby taking the key and promoted",
    "switch": "switching HAProxy's writes by hand (restart, reload, runtime API)",
    "recovery": "waiting for writes to come back through the unchanged API",
    "replication wait": "waiting for a standby to replay the primary's WAL",
    "rejoin": "an old primary rejoining as a standby (pg_rewind or a clone) and replaying the new one's writes",
    "workload": "waiting for the workload's own acknowledged writes",
    "checks": "judging a history against the databases",
    "lab stop": "stopping the session's servers and removing their traces",
}

_ledger: dict[str, float] | None = None
_depth = 0


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """A fresh ledger for one test: every phase timed until the block ends goes into it."""
    global _ledger, _depth
    previous, _ledger, _depth = _ledger, {}, 0
    try:
        yield _ledger
    finally:
        _ledger = previous


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as ``name`` in the current test's ledger (also usable as a decorator)."""
    global _depth
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; known: {', '.join(PHASES)}")
    ledger = _ledger
    if ledger is None or _depth:   # no test is recording, or an outer phase holds the time
        yield
        return
    _depth += 1
    started = time.monotonic()
    try:
        yield
    finally:
        _depth -= 1
        ledger[name] = ledger.get(name, 0.0) + time.monotonic() - started
