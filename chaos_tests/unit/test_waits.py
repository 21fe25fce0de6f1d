"""The harness' one way to wait: a deadline, and a message that says what and where."""

import socket
import time

import pytest

from chaoslab import phases
from chaoslab.errors import LabError
from chaoslab.waits import holds_for, wait_until


def test_returns_the_first_truthy_answer():
    answers = iter([None, 0, "ready"])
    assert wait_until(lambda: next(answers), service="redis", expected="PONG", timeout=5, interval=0) == "ready"


def test_a_deadline_names_service_expectation_log_and_last_error():
    def refuse():
        raise ConnectionRefusedError("connection refused")
    with pytest.raises(LabError) as failure:
        wait_until(refuse, service="db-replica", expected="to answer SELECT 1", timeout=0.2, interval=0.01,
                   log="/tmp/x/postgres.log")
    message = str(failure.value)
    assert message.startswith("db-replica: expected to answer SELECT 1 but it was still not so after 0.2s")
    assert "ConnectionRefusedError: connection refused" in message
    assert message.endswith("(log: /tmp/x/postgres.log)")


def test_a_lab_error_from_the_probe_ends_the_wait_at_once():
    def exited():
        raise LabError("redis", "redis-server to start", cause="the server exited")
    started = time.monotonic()
    with pytest.raises(LabError, match="the server exited"):
        wait_until(exited, service="redis", expected="PONG", timeout=30, interval=0.01)
    assert time.monotonic() - started < 5


def test_a_state_that_holds_is_watched_for_its_whole_length():
    calls = []
    started = time.monotonic()
    assert holds_for(lambda: calls.append(1) or True, seconds=0.3, interval=0.05) is True
    assert time.monotonic() - started >= 0.3
    assert len(calls) >= 4   # polled along the way, not slept through


def test_a_state_that_breaks_ends_the_watch_at_once():
    answers = iter([True, True, False, True])
    started = time.monotonic()
    assert holds_for(lambda: next(answers), seconds=10, interval=0.01) is False
    assert time.monotonic() - started < 1


def test_a_slow_probe_does_not_stretch_the_window():
    # A probe that takes 0.2 s, polled every 0.5 s for 0.3 s: the last probe starts when the
    # window ends, so the watch lasts about 0.5 s, not 0.9 s (a whole interval and a probe past
    # the window). Slow as a probe through a partition is: it waits for a peer that never
    # answers, up to its own timeout.
    started_at = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)   # the kernel completes the handshakes; nothing is ever sent back

        def slow():
            started_at.append(time.monotonic())
            with socket.create_connection(silent.getsockname(), timeout=0.2) as conn:
                try:
                    conn.recv(1)
                except TimeoutError:
                    return True   # no answer within the probe's timeout: still cut off
            return False
        began = time.monotonic()
        with phases.recording() as ledger:
            assert holds_for(slow, seconds=0.3, interval=0.5) is True
    assert started_at[-1] - began >= 0.3    # the window's end is still watched
    assert time.monotonic() - began < 0.8
    assert ledger["fault held"] >= 0.3      # the test's phases count the watch
