"""The hands-on tests' labs: `up` (the brief's stack, or a topology), then `down` whatever happens."""

from __future__ import annotations

import pytest

from .hands_on import chaoslab


@pytest.fixture
def hands_on_lab():
    chaoslab("down", "--all")   # whatever a killed run of this test left
    up = chaoslab("up")
    try:
        assert up.returncode == 0, f"`python -m chaoslab up` failed: {up.stderr}"
        yield up.stdout
    finally:
        down = chaoslab("down")
        assert down.returncode == 0, down.stderr


@pytest.fixture
def lab_on():
    """`up --topology T`, then `down` whatever happens; yields up's output."""
    started = []

    def up(topology: str) -> str:
        chaoslab("down", "--all")
        done = chaoslab("up", "--topology", topology, timeout=300)
        started.append(topology)
        assert done.returncode == 0, f"`python -m chaoslab up --topology {topology}` failed: {done.stderr}"
        return done.stdout
    yield up
    if started:
        down = chaoslab("down")
        assert down.returncode == 0, down.stderr
