"""Where a read of a key whose write marker is ahead of the replica goes (service.products),
against the in-memory cache and database roles of the single-flight tests."""

from __future__ import annotations

import asyncio

import pytest
from test_stampede_single_flight import FakeCache, _service, run

from service import queries
from service.db import DatabaseUnavailable

MARKER = 150
NEW_ROW = {"id": 1, "name": "new", "price_cents": 1, "updated_at": "2026-01-01T00:00:00"}


def _answers(role, *answers) -> None:
    """``role`` answers each (lsn, in_recovery, row) in turn, the last one from then on;
    None for an unavailable role."""
    script = list(answers)

    async def run_operation(operation, *, retry_if_broken: bool):
        role.reads += 1
        answer = script.pop(0) if len(script) > 1 else script[0]
        if answer is None:
            raise DatabaseUnavailable(role.role, "down")
        lsn, in_recovery, row = answer
        return (None if row is None else dict(row)), queries.Position(lsn=lsn, in_recovery=in_recovery)
    role.run = run_operation


def test_a_replica_behind_the_marker_sends_the_read_to_the_primary():
    async def scenario():
        cache = FakeCache(marker=MARKER)
        service, primary, replica, metrics = _service(cache, STAMPEDE_PROTECTION="off")
        _answers(replica, (MARKER - 50, True, None))
        _answers(primary, (MARKER + 10, False, NEW_ROW))
        read = await service.get(1)
        assert (read.node, primary.reads, replica.reads) == ("primary", 1, 1) and read.payload is not None
        assert len(cache.fills) == 1
        assert metrics.read_redirects.labels("replica_behind")._value.get() == 1

    run(scenario())


@pytest.mark.parametrize("write_port", [None, (MARKER - 10, True, None)], ids=["no_primary", "write_port_in_recovery"])
def test_with_no_primary_a_read_waits_a_bounded_time_for_the_replica_then_serves_it_uncached(write_port):
    """The write port may lead nowhere, or to a demoted leader restarting as a standby, open
    for reads before it has replayed its own WAL: that answer is no primary's. The read polls
    the replica for READ_CATCH_UP_S, then answers what the replica has, never cached."""
    async def scenario():
        cache = FakeCache(marker=MARKER)
        service, primary, replica, _ = _service(cache, STAMPEDE_PROTECTION="off", READ_CATCH_UP_S="0.3")
        _answers(replica, (MARKER - 50, True, None))
        _answers(primary, write_port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        read = await service.get(1)
        waited = loop.time() - started
        assert (read.node, read.payload) == ("replica", None)
        assert cache.fills == [], "what a replica behind the key's last write has must never be cached"
        assert 0.25 <= waited < 0.3 + 0.2 and replica.reads >= 4

    run(scenario())


def test_with_no_primary_a_replica_that_replays_the_write_in_time_serves_it():
    async def scenario():
        cache = FakeCache(marker=MARKER)
        service, primary, replica, _ = _service(cache, STAMPEDE_PROTECTION="off", READ_CATCH_UP_S="1")
        _answers(replica, (MARKER - 50, True, None), (MARKER - 20, True, None), (MARKER, True, NEW_ROW))
        _answers(primary, None)
        read = await service.get(1)
        assert read.node == "replica" and b'"new"' in read.payload and replica.reads == 3
        assert len(cache.fills) == 1 and cache.fills[0]["position"] == MARKER

    run(scenario())


def test_no_wait_when_catching_up_is_off():
    async def scenario():
        cache = FakeCache(marker=MARKER)
        service, primary, replica, _ = _service(cache, STAMPEDE_PROTECTION="off", READ_CATCH_UP_S="0")
        _answers(replica, (MARKER - 50, True, None))
        _answers(primary, None)
        read = await service.get(1)
        assert (read.node, read.payload, replica.reads) == ("replica", None, 1)

    run(scenario())
