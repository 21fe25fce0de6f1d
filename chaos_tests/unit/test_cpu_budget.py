"""The CPU budget's pure logic: the kernel's accounting records read as the kernel writes
them, processes named by kind, and the summary's arithmetic."""

from __future__ import annotations

import pytest

from chaoslab.cpu_budget import ACCT_V3, Accounted, MachineSamples, comp_t, kind_of, parse_acct, render, summarize

pytestmark = pytest.mark.unit


def _comp(value: int) -> int:
    """Encode as the kernel does (encode_comp_t): round to 13 bits, base-8 exponent."""
    exponent = 0
    while value > 0x1FFF:
        value >>= 3
        exponent += 1
    return (exponent << 13) | value


def _record(pid: int, comm: bytes, utime: int, stime: int, version: int = 3) -> bytes:
    return ACCT_V3.pack(0, version, 0, 0, 0, 0, pid, 1, 0, 250.0, _comp(utime), _comp(stime),
                        0, 0, 0, 0, 0, 0, comm)


def test_comp_t_is_a_13_bit_mantissa_with_a_base_8_exponent():
    assert comp_t(0x1FFF) == 8191
    assert comp_t((1 << 13) | 1000) == 8000
    assert comp_t((2 << 13) | 3) == 192
    assert comp_t(_comp(5545)) == 5545        # 55.45 s of CPU at 100 ticks a second


def test_records_give_each_process_its_cpu_seconds_and_name():
    records = parse_acct(_record(42, b"pg_basebackup", 30, 71) + _record(43, b"postgres", 0, 2))
    assert records[0] == Accounted(pid=42, ppid=1, comm="pg_basebackup", cpu_s=1.01, system_s=0.71, elapsed_s=2.5)
    assert records[1].comm == "postgres" and records[1].cpu_s == 0.02


def test_anything_but_whole_v3_records_is_refused():
    with pytest.raises(ValueError, match="version 2"):
        parse_acct(_record(1, b"x", 1, 1, version=2))
    with pytest.raises(ValueError, match="whole number"):
        parse_acct(_record(1, b"x", 1, 1)[:-1])


@pytest.mark.parametrize("comm, argv, kind", [
    ("python", ["/x/.venv/bin/python", "-m", "uvicorn", "--factory", "service.app:create_app"], "the API (uvicorn)"),
    ("python", ["/x/.venv/bin/python", "-m", "chaoslab", "up"], "chaoslab CLI `up` (hands-on tests, grader)"),
    ("python", ["python", "-m", "chaoslab.faultproxy", "--listen", "127.0.0.1:1"], "the fault proxy (the labs' links)"),
    ("python", ["python", "-m", "chaoslab", "load", "--seconds", "10"], "chaoslab CLI `load` (hands-on tests, grader)"),
    ("python", ["python", "-c", "import sys;exec(eval(sys.stdin.readline()))"], "pytest (controller and workers)"),
    ("node", ["node", "index.js"], "node (a submission's API, npm)"),
    ("python", None, "python, other"),
    ("bio_aof_fsync", None, "redis"),
    ("jemalloc_bg_thd", None, "redis"),
    ("pg_rewind", None, "PostgreSQL tools (pg_basebackup, pg_ctl, initdb...)"),
    ("iptables", None, "network set-up (ip, iptables)"),
    ("patroni", None, "patroni"),
    ("docker-compose", None, "docker-compose (v1)"),
    ("containerd-shim", None, "docker (dockerd, containerd, the docker command)"),
])
def test_a_process_is_named_by_its_command_line_when_sampled_else_by_its_name(comm, argv, kind):
    assert kind_of(comm, argv) == kind


def test_a_reused_pid_does_not_lend_its_command_line_to_another_program():
    records = [Accounted(7, 1, "python", 2.0, 0.1, 5.0), Accounted(8, 1, "libuv-worker", 3.0, 0.5, 9.0),
               Accounted(9, 1, "haproxy", 1.0, 0.5, 9.0)]
    names = {7: ("python", ["python", "-m", "chaoslab", "up"]),
             8: ("python", ["python", "-m", "uvicorn"]),      # uvloop's thread ended last
             9: ("python", ["python", "-m", "uvicorn"])}      # pid 9 was reused by haproxy
    assert summarize(records, names) == {"the API (uvicorn)": (1, 3.0),
                                         "chaoslab CLI `up` (hands-on tests, grader)": (1, 2.0),
                                         "haproxy": (1, 1.0)}


def test_the_summary_puts_what_no_process_accounts_for_on_the_kernel_and_says_when_the_cpus_were_the_bound():
    machine = MachineSamples(cpus=2)
    ticks = (0, 0)
    for busy in (195, 198, 200, 60):           # four seconds of two CPUs: 200 ticks each
        machine.add(ticks, (ticks[0] + busy, ticks[1] + 200))
        ticks = (ticks[0] + busy, ticks[1] + 200)
    text = render(["make", "test"], 0, 4.0, machine, {"postgres": (10, 4.0), "haproxy": (1, 0.1)})
    assert "2 CPUs, 8 CPU-seconds in that time; busy 7 (82%)" in text
    assert "under 10% idle: 75% of 4" in text
    outside = [line for line in text.splitlines() if line.strip().startswith("the kernel outside")][0]
    assert outside.split()[-2:] == ["2.4", "37%"]             # 6.53 busy - 4.1 accounted
    assert "the other kinds" in text                           # haproxy's 0.1 s
    assert "only less CPU work shortens it" in text
    idle = MachineSamples(cpus=2)
    idle.add((0, 0), (20, 200))
    assert "only less CPU work" not in render(["true"], 0, 1.0, idle, {})
