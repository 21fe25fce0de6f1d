"""What the hands-on tests share: `python -m chaoslab` run as a person runs it, the lines it
prints pasted into bash (the fixtures that bring a lab `up`, then `down` whatever happens,
are in conftest.py).

Each pytest-xdist worker has a run root of its own: a test's `down --all` (which reaps what a
killed run left) must not take down a lab that another worker's hands-on test is using."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from chaoslab.load import progress_counts
from chaoslab.waits import wait_until

from .signals import interruptible

REPO = Path(__file__).resolve().parents[2]
RUN_ROOT = Path(f"/tmp/chaoslab-hands-on-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")


def chaoslab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, CHAOSLAB_RUN_ROOT=str(RUN_ROOT))
    return subprocess.run([sys.executable, "-m", "chaoslab", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@contextmanager
def in_a_second_terminal(*args: str, **popen) -> Iterator[subprocess.Popen]:
    """`python -m chaoslab ARGS` running beside the test, its output on a pipe, Ctrl-C (SIGINT)
    reaching it as in a terminal's foreground; killed if the test leaves it running."""
    env = dict(os.environ, CHAOSLAB_RUN_ROOT=str(RUN_ROOT))
    popen.setdefault("preexec_fn", interruptible)
    process = subprocess.Popen([sys.executable, "-m", "chaoslab", *args], cwd=REPO, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               **popen)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()


def ctrl_c_once_clean_again(load: subprocess.Popen, *, timeout: float = 60) -> str:
    """Watch `load`'s once-a-second lines as a person does and press Ctrl-C at the first second
    with answers and no failure after one with failures: the outage is over, and waiting out
    the rest of ``--seconds`` would measure nothing more. Returns all it printed. If no outage
    is seen, the load runs to its own end (``--seconds`` bounds it); if it has not ended
    ``timeout`` seconds after this call, it is killed (its exit status then says so)."""
    lines, troubled = [], False
    watchdog = threading.Timer(timeout, load.kill)   # a load that hangs ends the read loop too
    watchdog.start()
    try:
        for line in load.stdout:
            lines.append(line)
            progress = progress_counts(line)
            if progress is None:
                continue
            ok, failed, unknown = progress
            if failed or unknown:
                troubled = True
            elif troubled and ok:
                load.send_signal(signal.SIGINT)
                break
        rest, _ = load.communicate(timeout=timeout)
    finally:
        watchdog.cancel()
    return "".join(lines) + rest


def pasted(line: str) -> str:
    """A printed line run as a student pastes it into bash (comment included)."""
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30)
    return done.stdout


def printed(output: str, start: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith(start)]


def assert_soon_a_hit(get: str) -> None:
    """The GET line, pasted again, is served from Redis (within a deadline: a fill the stale-fill
    guard refuses, a read racing a write, may take another GET)."""
    wait_until(lambda: "x-cache: hit" in pasted(get).lower(), service="api",
               expected=f"`{get}` answered from Redis (X-Cache: hit)", timeout=10, interval=0.2)


def status_line(output: str, service: str) -> list[str]:
    return next((line.split() for line in output.splitlines() if line.split()[:1] == [service]), [])


def connect_lines(output: str, label: str) -> list[str]:
    """The commands printed under `connect:` for ``label`` (the label stripped), as pasted."""
    return [line.strip()[len(label):].strip() for line in output.split("\nconnect:\n", 1)[1].splitlines()
            if line.split()[:1] == [label]]
