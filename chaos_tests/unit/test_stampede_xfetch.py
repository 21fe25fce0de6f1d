"""XFetch's decision (service.stampede), with an injected clock and random source."""

from __future__ import annotations

import math
import random

import pytest

from service.stampede import XFetch, lock_token, xfetch_due


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _xfetch(beta: float, now_s: float, draw: float) -> XFetch:
    """``draw`` is what random() returns; XFetch uses 1 - draw, in (0, 1]."""
    return XFetch(beta, clock=Clock(now_s), random=lambda: draw)


def test_the_formula():
    # rand = 1/e: refresh once within delta * beta of the expiry.
    r = math.exp(-1)
    assert xfetch_due(now=90.0, expiry=100.0, delta=10.0, beta=1.0, rand=r)
    assert not xfetch_due(now=89.9, expiry=100.0, delta=10.0, beta=1.0, rand=r)
    # beta scales the window.
    assert xfetch_due(now=80.0, expiry=100.0, delta=10.0, beta=2.0, rand=r)
    assert not xfetch_due(now=79.9, expiry=100.0, delta=10.0, beta=2.0, rand=r)


def test_at_or_past_expiry_it_is_always_due_and_far_from_it_never():
    assert xfetch_due(now=100.0, expiry=100.0, delta=5.0, beta=1.0, rand=1.0)
    assert xfetch_due(now=101.0, expiry=100.0, delta=0.0, beta=1.0, rand=0.5)
    smallest = 2.0 ** -53  # the smallest 1 - random() can be
    assert not xfetch_due(now=0.0, expiry=1000.0, delta=5.0, beta=1.0, rand=smallest)


def test_metadata_records_expiry_and_recompute_time_in_ms():
    xfetch = XFetch(1.0, clock=Clock(1_000.0))
    assert xfetch.meta(ttl_s=60, delta_s=0.0025) == b"1060000 2.500"
    assert xfetch.meta(ttl_s=2, delta_s=-1.0) == b"1002000 0.000"


def test_due_reads_the_metadata_with_the_injected_clock_and_random():
    meta = XFetch(1.0, clock=Clock(1_000.0)).meta(ttl_s=2, delta_s=0.1)  # expires at 1002.0 s, delta 100 ms
    draw_for_one_delta = 1.0 - math.exp(-1)  # -ln(1 - draw) == 1: a window of exactly one delta
    assert not _xfetch(1.0, 1001.8, draw_for_one_delta).due(meta)
    assert _xfetch(1.0, 1001.9, draw_for_one_delta).due(meta)
    assert _xfetch(3.0, 1001.7, draw_for_one_delta).due(meta)  # beta 3: three deltas early
    assert not _xfetch(1.0, 1001.9, 0.0).due(meta)  # draw 0: rand 1, only due at expiry
    assert _xfetch(1.0, 1002.0, 0.0).due(meta)


def test_beta_zero_never_refreshes_early_and_bad_metadata_is_ignored():
    meta = XFetch(1.0, clock=Clock(0.0)).meta(ttl_s=1, delta_s=0.5)
    assert not _xfetch(0.0, 0.999, 0.999999).due(meta)
    for bad in (b"", b"garbage", b"12 x", b"x 12"):
        assert not _xfetch(1.0, 0.0, 0.999999).due(bad)


def test_the_shortcut_far_from_expiry_agrees_with_the_formula():
    """due() skips the draw when no draw could reach the expiry: it must never change a decision."""
    delta_ms, expiry_ms = 10.0, 10_000.0
    meta = b"%d %.3f" % (expiry_ms, delta_ms)
    largest_draw = 1.0 - 2.0 ** -53
    for gap_ms in (0.0, 5.0, 100.0, 360.0, 367.0, 368.0, 369.0, 5_000.0):
        now_s = (expiry_ms - gap_ms) / 1000.0
        for draw in (0.0, 0.5, 0.99, largest_draw):
            expected = xfetch_due(now_s * 1000.0, expiry_ms, delta_ms, 1.0, 1.0 - draw)
            assert _xfetch(1.0, now_s, draw).due(meta) == expected, (gap_ms, draw)


@pytest.mark.parametrize("gap_deltas", [0.5, 1.0, 3.0])
def test_the_chance_of_refreshing_is_exp_of_minus_the_gap_in_deltas(gap_deltas):
    """P(due) = P(-ln U >= gap / (delta * beta)) = exp(-gap / (delta * beta)), U uniform."""
    source = random.Random(7)
    delta_s, trials = 0.01, 20_000
    meta = XFetch(1.0, clock=Clock(0.0)).meta(ttl_s=1, delta_s=delta_s)
    xfetch = XFetch(1.0, clock=Clock(1.0 - gap_deltas * delta_s), random=source.random)
    rate = sum(xfetch.due(meta) for _ in range(trials)) / trials
    assert rate == pytest.approx(math.exp(-gap_deltas), abs=0.015)


def test_lock_tokens_are_unique_and_opaque():
    tokens = {lock_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) == 24 for t in tokens)
