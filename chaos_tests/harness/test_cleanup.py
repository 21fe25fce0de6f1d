"""Nothing is left behind: after Ctrl-C, after SIGTERM (a CI runner or `timeout` giving up),
and after a run killed with SIGKILL (the next run reaps it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chaoslab import rundir
from chaoslab.local import netns
from chaoslab.waits import wait_until

from .signals import interruptible

pytestmark = pytest.mark.harness
REPO = Path(__file__).resolve().parents[2]

# An inner pytest session that starts the lab, says where it is, then waits to be interrupted.
INNER_TEST = textwrap.dedent("""
    import json, os, threading
    from pathlib import Path

    def test_hold_the_lab(cluster):
        ports = [e.port for e in (cluster.endpoint(s) for s in ("db-primary", "db-replica", "redis", "haproxy"))]
        # The fault proxy: its Toxiproxy API and each link it serves.
        ports += [cluster.faultproxy.api.port] + [e.port for e in cluster.fault_links.listen.values()]
        namespaces = cluster.network is not None
        Path(os.environ["LAB_INFO"]).write_text(json.dumps({"run": str(cluster.run_dir.path), "ports": ports,
                                                            "namespaces": namespaces}))
        threading.Event().wait(120)
""")


def _leftovers(run: Path, ports: list[int]) -> list[str]:
    problems = []
    if run.exists():
        problems.append(f"run directory {run} still exists")
    for port in ports:
        if not rundir._port_free(port):
            problems.append(f"port {port} still taken")
    # The servers' network namespaces, and with them their veths and bridge.
    problems += [f"network namespace {name} still exists" for name in netns.namespaces_of(run.name)]
    for pid in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(pid / "cwd").startswith(str(run)):
                problems.append(f"process {pid.name} still runs in {run}")
        except OSError:
            continue
    return problems


@pytest.mark.parametrize("interrupt, workers", [
    (signal.SIGINT, []),
    (signal.SIGTERM, []),
    # `make test`'s way: the lab lives in an xdist worker, the signal reaches the controller.
    (signal.SIGTERM, ["-n", "1"]),
    (signal.SIGKILL, []),
], ids=["ctrl-c", "sigterm", "sigterm-xdist", "sigkill"])
def test_an_interrupted_run_leaves_nothing(tmp_path, interrupt, workers):
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(INNER_TEST)
    info = tmp_path / "lab.json"
    env = dict(os.environ, LAB_INFO=str(info), PYTHONPATH=str(REPO))
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
         "--rootdir", str(tmp_path), *workers, str(test_file)],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=interruptible,
    )
    try:
        wait_until(lambda: info.exists() and info.read_text(), service="inner pytest",
                   expected="to start a lab", timeout=60)
        lab = json.loads(info.read_text())
        run = Path(lab["run"])
        # As root (CI), the servers run in namespaces of their own: their clean-up is checked too.
        assert lab["namespaces"] == (netns.unavailable_reason() is None)
        if lab["namespaces"]:
            assert netns.namespaces_of(run.name), "the lab should have made its servers' namespaces"
        inner.send_signal(interrupt)
        try:
            output, _ = inner.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            inner.kill()
            output, _ = inner.communicate(timeout=10)
            pytest.fail(f"the inner pytest did not end within 60 s of {interrupt.name}; its output:\n{output}")
        if interrupt == signal.SIGKILL:
            # A killed run cannot clean up; it leaves its servers, which the next run reaps.
            assert run.exists(), "a SIGKILLed run should have left its directory for the reaper"
            assert run in rundir.reap_abandoned_runs()
        assert _leftovers(run, lab["ports"]) == [], output
    finally:
        if inner.poll() is None:
            inner.kill()
