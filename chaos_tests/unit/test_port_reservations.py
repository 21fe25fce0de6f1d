"""Port reservations are machine-wide: two runs in two run roots never get the same port,
even one neither has bound yet (the brief's ports, wanted by every hands-on lab)."""

from __future__ import annotations

import socket

import pytest

from chaoslab import rundir


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "PORTS_DIR", tmp_path / "machine" / "ports")
    rundir.PORTS_DIR.mkdir(parents=True)
    return rundir.PORTS_DIR


def _run_in(root) -> rundir.RunDir:
    path = root / "run-1-abcdef"
    path.mkdir(parents=True)
    return rundir.RunDir(path)


def _a_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_port_reserved_in_one_root_is_not_given_in_another(registry, tmp_path):
    first, second = _run_in(tmp_path / "root-a"), _run_in(tmp_path / "root-b")
    wanted = _a_free_port()
    assert first.reserve_port(wanted) == wanted
    assert second.reserve_port(wanted) != wanted   # nothing listens on it yet: only the registry says so
    assert (registry / str(wanted)).read_text() == str(first.path)


def test_a_reservation_of_a_run_that_is_gone_is_taken_over(registry, tmp_path):
    gone, alive = _run_in(tmp_path / "root-a"), _run_in(tmp_path / "root-b")
    wanted = _a_free_port()
    assert gone.reserve_port(wanted) == wanted
    gone.path.rename(tmp_path / "elsewhere")
    assert alive.reserve_port(wanted) == wanted


def test_a_marker_being_written_counts_as_taken(registry, tmp_path):
    wanted = _a_free_port()
    (registry / str(wanted)).touch()   # created, not yet filled by its owner
    assert _run_in(tmp_path / "root-a").reserve_port(wanted) != wanted
