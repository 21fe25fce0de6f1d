"""The lab by hand, as a student uses it: `up`, the printed lines pasted into a shell, a fault
on the API, `down`. Run as a person would, through the command line, in a run root of its own
so that a lab the user left running is neither seen nor touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Callable

import pytest

from chaoslab.rundir import alive, process_tree
from chaoslab.waits import wait_until

from .hands_on import (REPO, RUN_ROOT, assert_soon_a_hit, chaoslab, ctrl_c_once_clean_again, in_a_second_terminal,
                       pasted, printed)

pytestmark = pytest.mark.harness


class TestOneLabByHand:
    """What leaves the lab as it found it (a fault undone, a link healed) shares one `up`,
    checked healthy before each test (``shared_lab``); the POST line's id 1 needs the first."""

    def test_up_starts_the_api_and_its_printed_curl_lines_work_as_pasted(self, shared_lab):
        curls = printed(shared_lab, "curl ")
        assert len(curls) == 4, f"expected POST, GET, PUT and /health lines in:\n{shared_lab}"
        post, get, put, health = curls
        created = json.loads(pasted(post))
        assert created["id"] == 1 and created["price_cents"] == 4999, created
        assert "x-cache: miss" in pasted(get).lower()
        assert_soon_a_hit(get)
        assert json.loads(pasted(put))["price_cents"] == 3999
        assert json.loads(pasted(health))["status"] == "ok"

    def test_a_fault_on_the_api_is_applied_and_undone_like_on_any_service(self, shared_lab):
        health = printed(shared_lab, "curl ")[-1]

        def api_state() -> str:
            status = chaoslab("status")
            assert status.returncode == 0, status.stderr
            return printed(status.stdout, "api ")[0].split()[2]

        killed = chaoslab("fault", "kill", "api")
        assert killed.returncode == 0, killed.stderr
        assert api_state() == "stopped"
        assert pasted(health) == "", "nothing should answer on the API's port once it is killed"

        started = chaoslab("fault", "start", "api")
        assert started.returncode == 0, started.stderr
        assert api_state() == "running"
        # Its connections are opened by the first requests: on a busy machine the first /health may
        # find a check over its deadline.
        wait_until(lambda: json.loads(pasted(health))["status"] == "ok", service="api",
                   expected="/health ok once started again", timeout=10, interval=0.2)

        assert chaoslab("fault", "pause", "api").returncode == 0
        assert api_state() == "paused"
        assert chaoslab("fault", "resume", "api").returncode == 0
        assert api_state() == "running"

    def test_load_stops_cleanly_on_ctrl_c_and_still_judges_its_history(self, shared_lab):
        with in_a_second_terminal("load", "--seconds", "60") as load:
            load.stdout.readline()
            load.stdout.readline()   # a first progress line: it is under way
            load.send_signal(signal.SIGINT)
            output, _ = load.communicate(timeout=15)
        assert load.returncode == 0, output
        assert "stopping: Ctrl-C" in output and "Traceback" not in output, output
        assert printed(output, "lost writes: 0 of "), output
        assert "no fault on the primary (db-primary, or Patroni's leader) during the load" in output

    def test_status_piped_into_a_reader_that_leaves_ends_quietly(self, shared_lab):
        """`status | head -1` when head has left before `status` writes (here `true`, which reads
        nothing, so that the pipe is always closed first): exit 141 as on SIGPIPE, no traceback."""
        piped = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m chaoslab status | true"],
                               cwd=REPO, env=dict(os.environ, CHAOSLAB_RUN_ROOT=str(RUN_ROOT)),
                               capture_output=True, text=True, timeout=60)
        assert (piped.returncode, piped.stderr) == (141, ""), (piped.returncode, piped.stderr)

    def test_a_service_the_topology_does_not_have_gets_one_line_naming_what_it_has(self, shared_lab):
        done = chaoslab("fault", "kill", "pg-1")
        assert done.returncode == 1, done.stderr
        assert "this lab has no 'pg-1'" in done.stderr and "db-primary" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        watch = chaoslab("up", "--topology", "raft")
        assert watch.returncode == 2 and "invalid choice: 'raft'" in watch.stderr, watch.stderr

    def test_a_network_fault_on_redis_shows_in_status_and_heals(self, shared_lab):
        """`fault latency redis --ms 300`: the API's link to Redis is slow (above the API's 100 ms
        Redis timeout, so /health says so), `status` lists the fault, `fault heal` removes it."""
        health = printed(shared_lab, "curl ")[-1]
        slowed = chaoslab("fault", "latency", "redis", "--ms", "300")
        assert slowed.returncode == 0, slowed.stderr
        assert "api_to_redis: latency downstream latency=300" in chaoslab("status").stdout
        wait_until(lambda: json.loads(pasted(health))["checks"]["redis"]["ok"] is False, service="api",
                   expected="/health to see Redis as not answering in time", timeout=10, interval=0.2)
        again = chaoslab("fault", "latency", "redis", "--ms", "-1")
        assert again.returncode == 2 and "expected a whole number from 0 to 600000" in again.stderr, again.stderr
        healed = chaoslab("fault", "heal")
        assert healed.returncode == 0, healed.stderr
        assert "network faults" not in chaoslab("status").stdout
        wait_until(lambda: json.loads(pasted(health))["status"] == "ok", service="api",
                   expected="/health ok once the link healed", timeout=15, interval=0.2)
        # Toxiproxy's other toxics, by hand (what they do to a connection: chaos_tests/unit/test_faultproxy.py).
        assert chaoslab("fault", "slow_close", "redis", "--ms", "200").returncode == 0
        limited = chaoslab("fault", "limit_data", "db-replica", "--bytes", "100000")
        assert limited.returncode == 0, limited.stderr
        assert "api_to_redis: slow_close downstream delay=200" in limited.stdout, limited.stdout
        assert "api_to_db_replica: limit_data downstream bytes=100000" in limited.stdout, limited.stdout
        zero = chaoslab("fault", "limit_data", "redis", "--bytes", "0")
        assert zero.returncode == 2 and "say `down` for that" in zero.stderr, zero.stderr
        assert chaoslab("fault", "heal").returncode == 0

    def test_a_partition_between_two_services_by_hand(self, shared_lab):
        """`fault partition db-primary db-replica`: the replication link is held both ways, the
        primary's own view shows the replica falling behind; `fault heal` ends it and the replica
        replays what it missed. Bad pairs get one line naming what the lab has."""
        post = printed(shared_lab, "curl ")[0]
        cut = chaoslab("fault", "partition", "db-primary", "db-replica")
        assert cut.returncode == 0, cut.stderr
        assert "db_replica_to_db_primary: timeout upstream timeout=0; timeout downstream timeout=0" in cut.stdout
        created = json.loads(pasted(post))   # written on the primary, held on its way to the replica
        replica = [line for line in printed(shared_lab, "db-replica ") if "psql" in line][0].split(None, 1)[1]
        query = f"SELECT count(*) FROM products WHERE id = {created['id']}"
        assert subprocess.run(["bash", "-c", f"{replica} -Atc '{query}'"], capture_output=True, text=True,
                              timeout=30).stdout.strip() == "0", "the replica saw a write made during the partition"
        assert chaoslab("fault", "heal").returncode == 0
        wait_until(lambda: subprocess.run(["bash", "-c", f"{replica} -Atc '{query}'"], capture_output=True, text=True,
                                          timeout=30).stdout.strip() == "1", service="db-replica",
                   expected="the write made during the partition replayed once healed", timeout=15, interval=0.2)
        bad = chaoslab("fault", "partition", "redis", "db-primary")
        assert bad.returncode == 1 and "a link between redis and db-primary to cut" in bad.stderr, bad.stderr
        one = chaoslab("fault", "partition", "redis")
        assert one.returncode == 2 and "which two services?" in one.stderr, one.stderr


# -- what changes the lab (a failover), or brings up its own: a lab each ---------------------------
def test_down_leaves_no_process_of_the_lab_or_its_api():
    chaoslab("down", "--all")
    up = chaoslab("up")
    assert up.returncode == 0, up.stderr
    run = next(RUN_ROOT.glob("run-*"))
    groups = [int(record.read_text()) for record in (run / "pgroups").iterdir()]
    assert "api" in {record.name for record in (run / "pgroups").iterdir()}, "the API should run inside the lab"
    pids = [pid for group in groups for pid in process_tree(group)]
    assert chaoslab("down").returncode == 0
    assert alive(pids) == [], f"processes left after `down`: {alive(pids)}"
    assert not run.exists()


def test_load_measures_a_failover_done_by_hand_with_the_scenarios_checkers(hands_on_lab):
    """The brief's part F by hand, in a second terminal, while `load` runs in the first."""
    with in_a_second_terminal("load", "--seconds", "10") as load:
        first_line = load.stdout.readline()
        assert first_line.startswith("load on http://127.0.0.1:"), first_line
        for step in (("fault", "stop", "db-primary"), ("promote", "db-replica"),
                     ("switch", "db-replica", "--method", "runtime_api")):
            done = chaoslab(*step)
            assert done.returncode == 0, f"{' '.join(step)}: {done.stderr}"
        output = ctrl_c_once_clean_again(load, timeout=30)
    assert load.returncode == 0, output
    assert " ok " in output and "p99" in output, f"no progress lines:\n{output}"
    lost = printed(output, "lost writes:")
    assert lost and lost[0].startswith("lost writes: 0 of "), output
    assert "failover: `fault stop db-primary`" in output
    figures = {line.split()[0]: line.split()[1] for line in printed(output, "") if line.endswith(")")
               and line.split()[0].endswith("_s")}
    for name in ("rto_s", "detection_s", "operator_action_s", "write_recovery_s"):
        assert float(figures[name]) >= 0, f"{name} missing from:\n{output}"


def test_watch_shows_the_primary_move_in_a_real_terminal(hands_on_lab, tmp_path):
    """`watch` in tmux, the brief's part F in another shell: the view follows the roles."""
    session = f"chaoslab-watch-{os.getpid()}"
    command = (f"env CHAOSLAB_RUN_ROOT={RUN_ROOT} {sys.executable} -m chaoslab watch; "
               "echo watch-exited-$?; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "45", "-c", str(REPO), command],
                   check=True, timeout=10)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                              timeout=10).stdout

    def row(text: str, node: str) -> list[str]:
        return next((line.replace("│", " ").split() for line in text.splitlines()
                     if line.replace("│", " ").split()[:1] == [node]), [])

    def wait_for(seen: Callable[[str], bool], expected: str) -> str:
        return wait_until(lambda: (lambda text: text if seen(text) else None)(screen()), service="watch",
                          expected=expected, timeout=30, interval=0.2)

    try:
        wait_for(lambda text: row(text, "db-primary")[1:3] == ["running", "primary"]
                 and row(text, "db-replica")[1:3] == ["running", "standby"], "db-primary shown as the primary")
        for step in (("fault", "kill", "db-primary"), ("promote", "db-replica"),
                     ("switch", "db-replica", "--method", "runtime_api")):
            assert chaoslab(*step).returncode == 0, step
        after = wait_for(lambda text: row(text, "db-primary")[1:2] == ["stopped"]
                         and row(text, "db-replica")[1:3] == ["running", "primary"] and "switch db-replica" in text,
                         "db-replica shown as the primary, db-primary stopped, the switch among the events")
        assert "kill db-primary" in after and "promote db-replica" in after
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True, timeout=10)
        ended = wait_for(lambda text: "watch-exited-" in text, "watch to quit on Ctrl-C")
        assert "watch-exited-0" in ended and "Traceback" not in ended, ended
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)

    image = tmp_path / "watch.svg"
    saved = chaoslab("watch", "--seconds", "1", "--svg", str(image))
    assert saved.returncode == 0, saved.stderr
    svg = image.read_text()
    assert svg.startswith("<svg") and "db-replica" in svg and "switch&#160;db-replica" in svg, svg[:500]


def test_demo_failover_prints_its_timeline_and_loses_nothing_after_a_clean_stop(hands_on_lab, tmp_path):
    demo = chaoslab("demo", "failover", "--fault", "stop", "--out", str(tmp_path))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    output = demo.stdout
    for step in ("stop db-primary", "a write is refused", "db-replica promoted", "HAProxy switched to db-replica",
                 "writes acknowledged again"):
        assert step in output, f"{step!r} missing from the demo's timeline:\n{output}"
    assert printed(output, "lost writes: 0 of "), output
    assert printed(output, "rto_s"), output
    seconds = printed(output, "writes per second")
    assert seconds and any("fault" in line for line in output.splitlines()), output
    assert (tmp_path / "demo-failover.png").stat().st_size > 10_000
    again = chaoslab("demo", "failover")
    assert again.returncode == 1 and "already failed over" in again.stderr, again.stderr
