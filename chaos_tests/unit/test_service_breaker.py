"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from service.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock, changes) -> CircuitBreaker:
    return CircuitBreaker(
        "redis", failure_threshold=3, reset_timeout=2.0, clock=clock, on_change=lambda n, s: changes.append((n, s))
    )


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow_request()
        breaker.record_failure()


def test_starts_closed_and_lets_calls_through(breaker):
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow_request() for _ in range(10))


def test_opens_after_threshold_consecutive_failures(breaker, changes):
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow_request()
    assert changes == [("redis", BreakerState.OPEN)]


def test_a_success_resets_the_failure_count(breaker):
    _fail(breaker, 2)
    breaker.record_success()
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_after_reset_timeout_lets_one_probe_through(breaker, clock):
    _fail(breaker, 3)
    clock.now += 1.99
    assert not breaker.allow_request()
    clock.now += 0.01
    assert breaker.allow_request()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow_request(), "only one probe at a time"


def test_probe_success_closes(breaker, clock, changes):
    _fail(breaker, 3)
    clock.now += 2
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow_request()
    assert [state for _, state in changes] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_probe_failure_reopens_for_a_full_reset_timeout(breaker, clock):
    _fail(breaker, 3)
    clock.now += 2
    assert breaker.allow_request()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 1.5
    assert not breaker.allow_request()
    clock.now += 0.5
    assert breaker.allow_request()


def test_a_probe_that_never_reports_does_not_wedge_the_breaker(breaker, clock):
    _fail(breaker, 3)
    clock.now += 2
    assert breaker.allow_request()  # the probe's caller vanishes without reporting
    clock.now += 1
    assert not breaker.allow_request()
    clock.now += 1
    assert breaker.allow_request(), "a stale probe lease must expire"


def test_retry_after_counts_down_whole_seconds(breaker, clock):
    assert breaker.retry_after() == 1
    _fail(breaker, 3)
    assert breaker.retry_after() == 2
    clock.now += 1.5
    assert breaker.retry_after() == 1
    clock.now += 5
    assert breaker.retry_after() == 1


def test_zero_reset_timeout_probes_immediately(clock):
    breaker = CircuitBreaker("db", failure_threshold=1, reset_timeout=0.0, clock=clock)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow_request()
    assert breaker.state is BreakerState.HALF_OPEN


def test_gauge_values_and_labels():
    assert [int(s) for s in BreakerState] == [0, 1, 2]
    assert [s.label for s in BreakerState] == ["closed", "open", "half-open"]


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0, "reset_timeout": 1}, {"failure_threshold": 1, "reset_timeout": -1}])
def test_rejects_nonsense_configuration(kwargs):
    with pytest.raises(ValueError):
        CircuitBreaker("x", **kwargs)


def test_a_silent_probe_holds_the_breaker_for_the_probe_timeout_not_the_reset(clock):
    """A short reset with a slow dependency: one probe at a time, until it is presumed lost."""
    breaker = CircuitBreaker("primary", failure_threshold=1, reset_timeout=0.25, probe_timeout=2.5, clock=clock)
    assert breaker.allow_request()
    breaker.record_failure()
    clock.now += 0.3
    assert breaker.allow_request()          # the probe, which then stays silent
    clock.now += 1.0
    assert not breaker.allow_request()      # past the reset, but the probe may still answer
    clock.now += 1.6
    assert breaker.allow_request()          # 2.6 s: presumed lost, another probe goes
