"""A SIGKILLed run of the Patroni topology leaves nothing once the next run has reaped it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chaoslab import rundir

pytestmark = pytest.mark.harness

INNER_LAB = """
import json, threading
from chaoslab.local.patroni import PatroniCluster
lab = PatroniCluster()
lab.start()
nodes = {name: [lab.endpoint(name).port, node.rest.port] for name, node in lab.nodes.items()}
ports = [port for pair in nodes.values() for port in pair] + [lab.endpoint(s).port for s in ("etcd", "haproxy", "redis")]
print(json.dumps({"run": str(lab.run_dir.path), "ports": ports}), flush=True)
threading.Event().wait(120)
"""


def test_a_killed_patroni_run_is_reaped_by_the_next(tmp_path):
    """Patroni starts PostgreSQL in a session of its own; a SIGKILLed run still leaves nothing
    once the next run has reaped it: no process in its directory, no port taken."""
    repo = Path(__file__).resolve().parents[2]
    inner = subprocess.Popen([sys.executable, "-c", INNER_LAB], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONPATH=str(repo)), start_new_session=True)
    run = None
    try:
        line = inner.stdout.readline()
        lab = json.loads(line) if line.startswith("{") else pytest.fail(f"the inner lab did not start: {line}")
        run = Path(lab["run"])
        postgres = [pid for pid in _processes_in(run) if "postgres" in _cmdline(pid)]
        assert len(postgres) >= 2, "the inner lab should run two PostgreSQL servers"
        os.killpg(inner.pid, signal.SIGKILL)   # the harness and nothing else: its servers live on
        inner.wait(10)
        assert _processes_in(run), "a SIGKILLed run should leave its servers for the reaper"
        rundir.reap_abandoned_runs()
        assert not run.exists(), f"{run} was not reaped"
        assert _processes_in(run) == [], "processes of the killed run survived the reaper"
        assert [port for port in lab["ports"] if not rundir._port_free(port)] == []
    finally:
        if inner.poll() is None:
            os.killpg(inner.pid, signal.SIGKILL)
            inner.wait(10)
        if run is not None and run.exists():   # a failed assertion must not leave the servers behind
            rundir.reap_run(run)


def _processes_in(run: Path) -> list[int]:
    """Live processes whose working directory is in the run (a zombie holds nothing)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            inside = os.readlink(proc / "cwd").startswith(str(run))
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if inside and state != "Z":
            found.append(int(proc.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
