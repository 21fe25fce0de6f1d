"""xdist's controller passes a SIGTERM on to its workers (its children), not to their own
children: each worker tears its lab down itself, in the order its fixtures say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from chaoslab import rundir

# Each process writes the signal it got to a file of its own; the parent has the controller's handler.
SLEEPER = textwrap.dedent("""
    import signal, sys, time
    def note(*_):
        open(sys.argv[1], "w").write("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, note)
    for _ in range(300):
        time.sleep(0.1)
""")
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from chaoslab.interrupts import Terminated, terminate_like_ctrl_c
    sleeper, child_file, grandchild_file = sys.argv[1:]
    CHILD = (f"import subprocess, sys\\n"
             f"subprocess.Popen([sys.executable, '-c', {sleeper!r}, {grandchild_file!r}])\\n"
             f"exec({sleeper!r})\\n")
    terminate_like_ctrl_c(pass_on_to_children=True)
    child = subprocess.Popen([sys.executable, "-c", CHILD, child_file], stdout=subprocess.DEVNULL)
    print("ready", flush=True)
    try:
        time.sleep(30)
    except Terminated:
        child.wait(10)
""")


def test_children_are_the_direct_ones_only():
    # This process may have others (an xdist worker's lab): only these two are looked for.
    with subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                           "print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(10)']).pid, "
                           "flush=True); time.sleep(10)"], stdout=subprocess.PIPE, text=True) as child:
        try:
            grandchild = int(child.stdout.readline())
            assert child.pid in rundir.children(os.getpid())
            assert grandchild not in rundir.children(os.getpid())
            assert rundir.children(child.pid) == [grandchild]
        finally:
            os.kill(grandchild, signal.SIGKILL)
            child.kill()


def test_a_sigterm_reaches_the_children_and_not_their_own(tmp_path):
    child_file, grandchild_file = tmp_path / "child", tmp_path / "grandchild"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, SLEEPER, str(child_file), str(grandchild_file)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert parent.stdout.readline().strip() == "ready"
        child = rundir.children(parent.pid)
        assert len(child) == 1
        grandchildren = []
        while not grandchildren:   # the child starts it first thing
            grandchildren = rundir.children(child[0])
        parent.send_signal(signal.SIGTERM)
        parent.communicate(timeout=15)
        assert child_file.read_text() == "SIGTERM", "the worker did not get the controller's SIGTERM"
        assert not grandchild_file.exists(), "a worker's own child got the SIGTERM meant for the worker"
    finally:
        parent.kill()
        for pid in grandchildren:
            os.kill(pid, signal.SIGKILL)
