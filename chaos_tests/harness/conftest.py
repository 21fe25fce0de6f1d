"""The hands-on tests' labs: `up` (the brief's stack, or a topology), then `down` whatever happens."""

from __future__ import annotations

import json

import pytest

from .hands_on import chaoslab, pasted, printed


def _up(*args: str) -> str:
    chaoslab("down", "--all")   # whatever a killed run of this test left
    up = chaoslab("up", *args, timeout=300)
    assert up.returncode == 0, f"`python -m chaoslab up {' '.join(args)}` failed: {up.stderr}"
    return up.stdout


def _down() -> None:
    down = chaoslab("down")
    assert down.returncode == 0, down.stderr


@pytest.fixture
def hands_on_lab():
    """A lab of its own, for a test that leaves it changed (a failover)."""
    try:
        yield _up()
    finally:
        _down()


class SharedLab:
    """One `up` for a class of tests that each leave the lab as they found it (a fault undone,
    a link healed): a lab costs several seconds and CPU-seconds to start. Before each test it
    is checked as a student would (/health, `status`), and replaced if a failed test left it
    broken, so that one failure does not cascade into the next tests."""

    output = ""

    def up(self) -> SharedLab:
        self.output = _up()
        return self

    def healthy(self) -> bool:
        try:
            ok = json.loads(pasted(printed(self.output, "curl ")[-1]))["status"] == "ok"
        except (ValueError, KeyError, IndexError):   # no answer, or no /health line to paste
            return False
        status = chaoslab("status")
        services = status.stdout.split("\nconnect:\n", 1)[0].splitlines()[1:]
        return (ok and status.returncode == 0 and "network faults" not in status.stdout
                and all(line.split()[2] == "running" for line in services if len(line.split()) > 2))

    def renewed_if_broken(self) -> str:
        if not self.healthy():
            _down()
            self.up()
        return self.output


@pytest.fixture(scope="class")
def one_lab_for_the_class():
    try:
        yield SharedLab().up()
    finally:
        _down()


@pytest.fixture
def shared_lab(one_lab_for_the_class):
    """The class's lab, healthy: up's output, as ``hands_on_lab`` gives it."""
    return one_lab_for_the_class.renewed_if_broken()


@pytest.fixture
def lab_on():
    """`up --topology T`, then `down` whatever happens; yields up's output."""
    started = []

    def up(topology: str) -> str:
        started.append(topology)   # a failed `up` is taken down too
        return _up("--topology", topology)
    yield up
    if started:
        _down()
