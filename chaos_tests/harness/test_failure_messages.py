"""Failures a student meets, each ending with a clear message: the service, what was
expected, and its log. Never a hang, never a bare traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chaoslab.errors import LabError
from chaoslab.local.process import ServerProcess, ServerUser
from chaoslab.local.redis import RedisNode
from chaoslab.rundir import RunDir
from chaoslab.topology import Endpoint

pytestmark = pytest.mark.harness
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir():
    directory = RunDir.create()
    yield directory
    directory.remove()


def test_a_port_already_taken_names_the_service_and_its_log(run_dir):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        node = RedisNode("redis", Endpoint("127.0.0.1", port), run_dir, ServerUser.detect())
        with pytest.raises(LabError) as failure:
            node.start(timeout=10)
    message = str(failure.value)
    assert message.startswith("redis: expected")
    assert str(node.log) in message
    assert "Address already in use" in node.log.read_text()


def test_a_missing_program_says_so(run_dir):
    process = ServerProcess(name="haproxy", args=["/nonexistent/haproxy"], cwd=run_dir.path,
                            log=run_dir.path / "haproxy.log", user=ServerUser.detect(), run_dir=run_dir)
    with pytest.raises(LabError, match=r"^haproxy: expected to start /nonexistent/haproxy but the program is not installed"):
        process.start()


def test_the_cli_reports_errors_in_one_line():
    done = subprocess.run([sys.executable, "-m", "chaoslab", "fault", "kill", "db-primary"], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CHAOSLAB_RUN_ROOT": "/tmp/chaoslab-empty-for-test"})
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: lab: expected a stack started by `python -m chaoslab up`")
    assert "Traceback" not in done.stderr


FAILING_SUITE = '''
import pytest
from chaoslab.rundir import RunDir


@pytest.fixture(scope="session")
def lab():
    run = RunDir.create()
    (run.service_dir("redis") / "redis.log").write_text("the line that explains the failure\\n")
    yield run
    run.remove()   # at the session's end, as the lab fixtures do


def test_that_fails(lab):
    assert False, "a scenario that failed"


def test_that_passes(lab):
    pass
'''


def test_a_failed_run_keeps_its_servers_logs_beside_its_results(tmp_path):
    """A failure names its service's log, in a run directory that is gone once the session
    ends: after a failure the logs are copied beside the results file first."""
    (tmp_path / "test_suite.py").write_text(FAILING_SUITE)
    env = {"PATH": "/usr/bin:/bin", "CHAOSLAB_RUN_ROOT": str(tmp_path / "runs"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "chaoslab.pytest_plugin", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path / "test_suite.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    kept = list((tmp_path / "reports" / "logs" / "results").glob("run-*/redis/redis.log"))
    assert [log.read_text() for log in kept] == ["the line that explains the failure\n"], done.stdout
    assert "journaux des serveurs" in done.stdout and not list((tmp_path / "runs").glob("run-*"))

    (tmp_path / "test_suite.py").write_text(FAILING_SUITE.replace("assert False", "assert True"))
    again = subprocess.run([sys.executable, "-m", "pytest", "-p", "chaoslab.pytest_plugin", "-p", "no:cacheprovider",
                            "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path / "test_suite.py")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert "2 passed" in again.stdout, again.stdout + again.stderr
    assert not (tmp_path / "reports" / "logs" / "results").exists(), "a passing run keeps no logs, nor old ones"
