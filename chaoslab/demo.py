"""`python -m chaoslab demo failover`: the brief's part F in one command, on the running lab.

The scenarios' workload writes and reads through the lab's API; the primary is stopped or
killed; the operator's moves follow as a student makes them (once a write is seen refused:
promote the replica, then switch HAProxy by the brief's method); the demo waits for writes
to come back, then prints the timeline second by second and the same verdict as `load`
(lost writes, RTO split), and draws it as a PNG.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from . import lab_events, plots
from .checkers import availability_timeline
from .errors import LabError
from .load import judge
from .steps import wait_for_new_acks
from .topology import HAPROXY, PRIMARY, REPLICA
from .waits import wait_until
from .workload import Workload

FAULTS = ("kill", "stop")
STEP_DEADLINE_S = 30


def _history_has(workload: Workload, outcome: str, since: float) -> bool:
    return any(inv.f == "write" and done.type == outcome and inv.time >= since
               for inv, done in workload.history.pairs())


def run_demo(cluster, api_url: str, *, fault: str, switch: str, out_dir: Path,
             present_names: Callable[[], set[str]], out: Callable[[str], None] = print) -> int:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r} for the demo; known: {', '.join(FAULTS)}")
    if cluster.node_behind_haproxy() != PRIMARY:
        raise LabError(HAPROXY, f"writes to land on {PRIMARY}, as in a new lab",
                       cause="this lab has already failed over: run `python -m chaoslab down` then "
                             "`python -m chaoslab up`")
    workload = Workload(api_url, writers=3, readers=1, max_ops=20_000, max_seconds=90, request_timeout=3)
    since = time.time()
    out(f"load on {api_url}: 3 writers, 1 reader")
    workload.start()

    def act(kind: str, detail: str, action: Callable[[], None], said: str) -> float:
        """One of the operator's moves, recorded in the lab's events (for `watch`) and printed."""
        with lab_events.recorded(cluster.run_dir, kind, detail):
            action()
        out(f"{time.time() - since:6.2f} s  {said}")
        return time.monotonic()

    def seen(what: str) -> None:
        out(f"{time.time() - since:6.2f} s  {what}")

    try:
        wait_for_new_acks(workload, 20, timeout=STEP_DEADLINE_S)
        fault_at = act("fault", f"{fault} {PRIMARY}", lambda: cluster.fault(fault, PRIMARY), f"{fault} {PRIMARY}")
        wait_until(lambda: _history_has(workload, "fail", fault_at), service="api",
                   expected="a write refused after the fault (what the operator sees)", timeout=STEP_DEADLINE_S)
        seen("a write is refused: the operator acts")
        act("promote", f"{REPLICA} (pg_ctl)", lambda: cluster.promote(REPLICA), f"{REPLICA} promoted")
        switched_at = act("switch", f"{REPLICA} ({switch})", lambda: cluster.switch_writes(REPLICA, switch),
                          f"HAProxy switched to {REPLICA} ({switch})")
        wait_until(lambda: _history_has(workload, "ok", switched_at), service="api",
                   expected="a write acknowledged after the switch", timeout=STEP_DEADLINE_S)
        seen("writes acknowledged again")
        wait_for_new_acks(workload, 50, timeout=STEP_DEADLINE_S)   # the recovered service on the timeline too
    finally:
        workload.stop()
        workload.join(timeout=5)

    history = workload.history
    status = judge(history, lab_events.read_events(cluster.run_dir), since, present_names, out)
    timeline = availability_timeline(history, bucket=1.0)
    writes = timeline["counts"]["write"]
    out("writes per second (ok / failed / unknown):")
    for index, second in enumerate(timeline["t"]):
        events = [event["name"] for event in timeline["events"] if second <= event["time"] < second + 1]
        out(f"  {second:4.0f} s  {writes['ok'][index]:4d} / {writes['fail'][index]:3d} / "
            f"{writes['unknown'][index]:3d}  {' '.join(events)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plots.timeline_plot(availability_timeline(history, bucket=0.1), out_dir / "demo-failover.png",
                              title=f"Partie F : {fault} {PRIMARY}, promotion, bascule ({switch})")
    out(f"timeline: {png}")
    out(f"the lab now writes to {REPLICA}: `python -m chaoslab down` then `up` for a new one")
    return status
