"""WAL positions: 'X/Y' text to integers, and what a cache fill read at one may overwrite."""

from __future__ import annotations

import pytest

from service.lsn import MAX_LSN, UNKNOWN_WRITE_LSN, parse_lsn
from service.products import fill_must_be_newer
from service.queries import Position


@pytest.mark.parametrize(
    "text,value",
    [
        ("0/0", 0),
        ("0/16B3748", 0x16B3748),
        ("1/0", 1 << 32),
        ("16/B374D848", (0x16 << 32) | 0xB374D848),
        ("FFFFFFFF/FFFFFFFF", MAX_LSN),
        ("a/b", (0xA << 32) | 0xB),
    ],
)
def test_parse(text, value):
    assert parse_lsn(text) == value


def test_order_follows_the_wal():
    # The low half is not zero-padded in PostgreSQL's text: compare as integers.
    assert parse_lsn("0/FFFFFFFF") < parse_lsn("1/0") < parse_lsn("1/10") < parse_lsn("2/1")
    assert parse_lsn("0/9") < parse_lsn("0/10")


@pytest.mark.parametrize("text", ["", "0", "0/", "/0", "0/0/0", "G/0", "0/123456789", "-1/0", "0x1/0"])
def test_rejects_what_is_not_a_position(text):
    with pytest.raises(ValueError):
        parse_lsn(text)


def test_unknown_write_position_is_beyond_any_replica():
    assert UNKNOWN_WRITE_LSN >= parse_lsn("FFFFFFFF/FFFFFFFF")


@pytest.mark.parametrize("position,marker_before_read,must_be_newer", [
    (Position(lsn=100, in_recovery=True), 100, False),    # a standby's replay position: equal is enough
    (Position(lsn=100, in_recovery=True), None, False),
    (Position(lsn=100, in_recovery=False), None, True),   # a primary's: a write may be flushed, not visible
    (Position(lsn=100, in_recovery=False), 90, True),
    (Position(lsn=100, in_recovery=False), 100, False),   # that write's marker was set before the read began
    (Position(lsn=100, in_recovery=False), UNKNOWN_WRITE_LSN, True),
    (None, 100, False),                                   # no guard: no position, no marker check
])
def test_a_fill_from_the_primary_must_be_newer_than_a_marker_it_did_not_see_before_reading(
        position, marker_before_read, must_be_newer):
    assert fill_must_be_newer(position, marker_before_read) is must_be_newer
