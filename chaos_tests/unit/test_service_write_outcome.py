"""A write whose outcome the API cannot know is never reported as refused.

A primary killed between its commit and its reply leaves the API with a broken
connection after the write was sent: the row may be committed. A 503 would tell the
client it was not, which part F's history showed to be false; the API answers 502 (or
504 for a timeout) with ``outcome: unknown``, and drops the cached row all the same.
"""

from __future__ import annotations

import asyncio

import pytest

from service.db import DatabaseUnavailable
from service.errors import ServiceUnavailable, WriteOutcomeUnknown
from service.metrics import Metrics
from service.products import ProductService
from service.validation import ProductInput

from test_stampede_single_flight import FakeCache, FakeRole, _settings


class FailingPrimary(FakeRole):
    def __init__(self, reason: str, maybe_applied: bool) -> None:
        super().__init__("primary")
        self.error = DatabaseUnavailable("primary", reason, maybe_applied=maybe_applied)

    async def run(self, operation, *, retry_if_broken: bool):
        raise self.error


def _update(primary: FakeRole) -> tuple[BaseException, FakeCache]:
    cache = FakeCache()
    service = ProductService(_settings(), Metrics(), primary, FakeRole("replica"), cache)

    async def attempt() -> BaseException:
        with pytest.raises((ServiceUnavailable, WriteOutcomeUnknown)) as raised:
            await service.update(7, ProductInput(name="Keyboard", price_cents=3999))
        return raised.value
    return asyncio.run(attempt()), cache


@pytest.mark.parametrize(("reason", "status"), [("connection lost", 502), ("database error", 502), ("timed out", 504)])
def test_a_write_that_may_have_committed_is_an_unknown_outcome(reason, status):
    error, cache = _update(FailingPrimary(reason, maybe_applied=True))
    assert isinstance(error, WriteOutcomeUnknown)
    assert error.status_code == status
    assert error.extra == {"service": "db-primary", "outcome": "unknown"}
    assert error.headers["Retry-After"] == "1"
    assert cache.invalidations == [7], "the row may have changed: its cached copy must go"


@pytest.mark.parametrize("reason", ["no connection available", "node is read-only"])
def test_a_write_that_never_reached_a_primary_is_a_503(reason):
    error, cache = _update(FailingPrimary(reason, maybe_applied=False))
    assert isinstance(error, ServiceUnavailable) and error.status_code == 503
    assert cache.invalidations == []
