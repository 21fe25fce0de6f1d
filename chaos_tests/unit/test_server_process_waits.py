"""ServerProcess.wait_answering: the local nodes' one way to wait for a server to answer."""

import time

import pytest

from chaoslab.errors import LabError
from chaoslab.local.process import ServerProcess, ServerUser
from chaoslab.rundir import RunDir


@pytest.fixture
def process(tmp_path):
    (tmp_path / "pgroups").mkdir()
    return ServerProcess(name="redis", args=["redis-server"], cwd=tmp_path, log=tmp_path / "redis.log",
                         user=ServerUser.detect(), run_dir=RunDir(tmp_path))


def test_an_exited_process_fails_at_once_naming_service_expectation_and_log(process, monkeypatch):
    monkeypatch.setattr(process, "running", lambda: False)
    probed = []
    started = time.monotonic()
    with pytest.raises(LabError) as failure:
        process.wait_answering(lambda: probed.append(1), expected="PONG on 127.0.0.1:6379", timeout=30)
    assert time.monotonic() - started < 5
    assert probed == []
    assert str(failure.value) == (f"redis: expected PONG on 127.0.0.1:6379 but the process exited "
                                  f"(log: {process.log})")


def test_a_running_process_is_probed_until_it_answers(process, monkeypatch):
    monkeypatch.setattr(process, "running", lambda: True)
    answers = iter([ConnectionRefusedError("not yet"), False, "PONG"])

    def probe():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    assert process.wait_answering(probe, expected="PONG", timeout=5) == "PONG"


def test_a_process_that_exits_while_waited_for_ends_the_wait(process, monkeypatch):
    alive = iter([True, True])
    monkeypatch.setattr(process, "running", lambda: next(alive, False))
    with pytest.raises(LabError, match="the process exited"):
        process.wait_answering(lambda: False, expected="PONG", timeout=30)


def test_a_probe_that_never_answers_times_out_with_the_log(process, monkeypatch):
    monkeypatch.setattr(process, "running", lambda: True)
    with pytest.raises(LabError) as failure:
        process.wait_answering(lambda: False, expected="PONG", timeout=0.2)
    message = str(failure.value)
    assert message.startswith("redis: expected PONG but it was still not so after 0.2s")
    assert message.endswith(f"(log: {process.log})")
