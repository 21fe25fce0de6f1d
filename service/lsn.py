"""PostgreSQL WAL positions ('X/Y' text) as plain integers.

Integers compare correctly and travel through Redis as decimal strings; the Lua
scripts in ``service.cache`` compare those strings exactly (by length, then
lexicographically) because Lua numbers are doubles.
"""

from __future__ import annotations

import re

_LSN_TEXT = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")

MAX_LSN = 2**64 - 1

# The marker written when a write committed (or may have) but its WAL position
# could not be read: no replica can reach it and no read can match it, so the
# key is read from the primary and never cached until the marker expires.
UNKNOWN_WRITE_LSN = MAX_LSN


def parse_lsn(text: str) -> int:
    match = _LSN_TEXT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a WAL position: {text!r}")
    high, low = match.groups()
    return (int(high, 16) << 32) | int(low, 16)
