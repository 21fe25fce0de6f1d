"""`python -m chaoslab load`: the scenarios' workload through the API of a running lab.

Writers create products and readers read the newest acknowledged ones, for a bounded time
and number of operations (or until Ctrl-C); once a second a line says what was acknowledged,
refused or left unanswered, with the latency. At the end the run's history is judged by the
scenarios' own checkers: lost writes against what the database holds, and, when the primary
was taken away meanwhile (`fault ... db-primary` in another terminal), the failover's figures
from the times the lab's events file gives (see lab_events).
"""

from __future__ import annotations

import re
import time
from typing import Callable

from . import lab_events
from .checkers import check_lost_writes, failover_figures, measure, percentile
from .history import History
from .rundir import RunDir
from .topology import HAPROXY
from .workload import Workload

REQUEST_TIMEOUT_S = 3.0
MAX_SECONDS = 3600


def _window(history: History, since: float, until: float) -> tuple[dict[str, int], list[float]]:
    """Completions in [since, until), reads and writes: counts by type, and latencies in ms."""
    counts = {"ok": 0, "fail": 0, "unknown": 0}
    latencies = []
    for invoke, done in history.pairs():
        if since <= done.time < until:
            counts[done.type] += 1
            latencies.append((done.time - invoke.time) * 1000)
    return counts, latencies


def progress_line(history: History, elapsed: float, now: float) -> str:
    counts, latencies = _window(history, now - 1.0, now)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    latency = f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms" if latencies else "no answer this second"
    return (f"{elapsed:5.0f} s  ok {counts['ok']:4d}  failed {counts['fail']:4d}  "
            f"unknown {counts['unknown']:3d}  {latency}")


_PROGRESS = re.compile(r"\bok\s+(\d+)\s+failed\s+(\d+)\s+unknown\s+(\d+)")


def progress_counts(line: str) -> tuple[int, int, int] | None:
    """(ok, failed, unknown) of a line ``progress_line`` printed, None for any other line: for
    whoever watches the load's output (the hands-on tests do, as a person would)."""
    found = _PROGRESS.search(line)
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def run_load(api_url: str, run_dir: RunDir, present_names: Callable[[], set[str]], *, seconds: float,
             writers: int, readers: int, rate: float | None, out: Callable[[str], None] = print) -> int:
    """Run the load, print its progress and verdict; 1 if a write was lost or refused yet committed."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"--seconds must be in (0, {MAX_SECONDS}]: a load is always bounded, got {seconds:g}")
    if rate is not None and rate <= 0:
        raise ValueError(f"--rate must be positive (operations per second per worker), got {rate:g}")
    workload = Workload(api_url, writers=writers, readers=readers, max_ops=100_000, max_seconds=seconds,
                        request_timeout=REQUEST_TIMEOUT_S, pause_between_ops=1 / rate if rate else 0.01)
    since = time.time()
    out(f"load on {api_url}: {writers} writers, {readers} readers, at most {seconds:g} s (Ctrl-C stops it)")
    workload.start()
    try:
        while not workload.join(timeout=1.0):
            out(progress_line(workload.history, time.time() - since, time.monotonic()))
    except KeyboardInterrupt:
        out("stopping: Ctrl-C")
    finally:
        workload.stop()
        workload.join(timeout=REQUEST_TIMEOUT_S + 2)
    return judge(workload.history, lab_events.read_events(run_dir), since, present_names, out)


def judge(history: History, events: list[lab_events.LabEvent], since: float,
          present_names: Callable[[], set[str]], out: Callable[[str], None]) -> int:
    counts, _ = _window(history, float("-inf"), float("inf"))
    out(f"done: {counts['ok']} operations (reads and writes) answered ok, {counts['fail']} failed, "
        f"{counts['unknown']} unknown")
    status = 0
    try:
        lost = check_lost_writes(history, present_names())
    except Exception as exc:  # the lab's write endpoint is down: say so, judge what can be
        out(f"lost writes: not checked, HAProxy's write endpoint ({HAPROXY}) does not answer: {exc}")
    else:
        out(f"lost writes: {lost.lost} of {lost.acked} acknowledged"
            + (f" ({', '.join(lost.lost_names[:5])})" if lost.lost else "")
            + f"; refused but committed: {lost.failed_but_present}; unknown, committed: "
              f"{lost.unknown_present} of {lost.unknown}")
        status = 1 if lost.lost or lost.failed_but_present else 0
    fault = lab_events.mark_failover(history, events, since=since)
    if fault is None:
        out("no fault on the primary (db-primary, or Patroni's leader) during the load: no failover figures")
        return status
    out(f"failover: `fault {fault.detail}`, then what the lab's events file recorded after it")
    for name, value in failover_figures(history).rounded().items():
        figure = measure(name)
        shown = "n/a" if value is None else f"{value:.3f} {figure.unit}"
        out(f"  {name:<24} {shown:>10}   ({figure.label})")
    return status
