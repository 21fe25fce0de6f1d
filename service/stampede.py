"""Anti cache-stampede: the pure parts (XFetch's decision, lock tokens).

Probabilistic early expiration, "XFetch" (Vattani, Chierichetti, Lowenstein,
"Optimal Probabilistic Cache Stampede Prevention", VLDB 2015): a value is stored
with ``delta``, the time its last recomputation took, and its ``expiry``. Each
read recomputes it early when

    now - delta * beta * ln(rand()) >= expiry,     rand() uniform in (0, 1]

so the chance grows as expiry nears, and sooner for values that are slow to
recompute; beta > 1 favours earlier refreshes, beta = 0 turns them off. Under a
steady load one read refreshes the value shortly before it expires and the key
never goes missing; under a light load the key may expire first, and the lock
(see service.products) keeps that miss to one load.
"""

from __future__ import annotations

import math
import random as _random
import secrets
import time
from collections.abc import Callable


# The largest -ln(rand) can be: 1 - random() is at least 2**-53, and -ln(2**-53) < 36.8.
_MAX_GAP = 36.8


def xfetch_due(now: float, expiry: float, delta: float, beta: float, rand: float) -> bool:
    """XFetch's test; ``rand`` in (0, 1]. Times in one unit (the caller's)."""
    return now - delta * beta * math.log(rand) >= expiry


class XFetch:
    """XFetch with an injectable clock (seconds, wall time: the expiry is shared by
    every API process through Redis) and random source (uniform in [0, 1))."""

    def __init__(
        self,
        beta: float,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.beta = beta
        self._clock = clock
        self._random = random

    def meta(self, ttl_s: float, delta_s: float) -> bytes:
        """What is stored beside a value filled now: its expiry and its recompute time, in ms."""
        expiry_ms = (self._clock() + ttl_s) * 1000.0
        return b"%d %.3f" % (expiry_ms, max(delta_s, 0.0) * 1000.0)

    def due(self, meta: bytes) -> bool:
        """Whether this read should refresh the value early; False for malformed metadata."""
        if self.beta <= 0:
            return False
        expiry_text, _, delta_text = meta.partition(b" ")
        try:
            expiry_ms, delta_ms = float(expiry_text), float(delta_text)
        except ValueError:
            return False
        now_ms = self._clock() * 1000.0
        if expiry_ms - now_ms > delta_ms * self.beta * _MAX_GAP:
            return False  # no draw can reach that far: skip the draw (most hits)
        # random() is in [0, 1); 1 - random() is in (0, 1], so the log is finite.
        return xfetch_due(now_ms, expiry_ms, delta_ms, self.beta, 1.0 - self._random())


def lock_token() -> str:
    """A token only its holder knows: the release deletes the lock only if it still holds it."""
    return secrets.token_hex(12)
