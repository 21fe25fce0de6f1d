"""Where a read of a key with a newer write marker than the replica has goes (service.products),
against the in-memory cache and database roles of the single-flight tests."""

from __future__ import annotations

import pytest

from service import queries

from test_stampede_single_flight import FakeCache, _service, run

MARKER = 150


class _At:
    """An operation's answer from a role at a given WAL position."""

    def __init__(self, role, lsn: int, in_recovery: bool, row: dict | None) -> None:
        async def answer(operation, *, retry_if_broken: bool):
            role.reads += 1
            return (None if row is None else dict(row)), queries.Position(lsn=lsn, in_recovery=in_recovery)
        role.run = answer


@pytest.mark.parametrize("primary_in_recovery,served_by,cached", [(False, "primary", True), (True, "replica", False)])
def test_a_replica_behind_the_marker_sends_the_read_to_a_primary_that_is_one(primary_in_recovery, served_by, cached):
    """The write port may lead to a demoted leader restarting as a standby, open for reads
    before it has replayed its own WAL: its answer is no primary's, so it is served as the
    replica's (never cached) rather than as an authoritative one."""
    async def scenario():
        cache = FakeCache(marker=MARKER)
        service, primary, replica, metrics = _service(cache, STAMPEDE_PROTECTION="off")
        _At(replica, lsn=MARKER - 50, in_recovery=True, row=None)
        _At(primary, lsn=MARKER - 10 if primary_in_recovery else MARKER + 10, in_recovery=primary_in_recovery,
            row={"id": 1, "name": "new", "price_cents": 1, "updated_at": "2026-01-01T00:00:00"}
            if not primary_in_recovery else None)
        read = await service.get(1)
        assert read.node == served_by and primary.reads == 1
        assert (read.payload is not None) == (not primary_in_recovery)
        assert bool(cache.fills) == cached
        assert metrics.read_redirects.labels("replica_behind")._value.get() == 1

    run(scenario())
