"""xdist's controller passes a SIGTERM on to its workers (its children), not to their own
children: each worker tears its lab down itself, in the order its fixtures say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from chaoslab import rundir
from chaoslab.waits import wait_until

# Each process writes the signal it got to a file of its own; the parent has the controller's handler.
IDLER = textwrap.dedent("""
    import signal, sys, threading
    def note(*_):
        open(sys.argv[1], "w").write("SIGTERM")
        sys.exit(0)
    signal.signal(signal.SIGTERM, note)
    threading.Event().wait(30)   # idle until signalled, 30 s at most
""")
PARENT = textwrap.dedent("""
    import subprocess, sys, threading
    from chaoslab.interrupts import Terminated, terminate_like_ctrl_c
    idler, child_file, grandchild_file = sys.argv[1:]
    CHILD = (f"import subprocess, sys\\n"
             f"subprocess.Popen([sys.executable, '-c', {idler!r}, {grandchild_file!r}])\\n"
             f"exec({idler!r})\\n")
    terminate_like_ctrl_c(pass_on_to_children=True)
    child = subprocess.Popen([sys.executable, "-c", CHILD, child_file], stdout=subprocess.DEVNULL)
    print("ready", flush=True)
    try:
        threading.Event().wait(30)   # idle until the SIGTERM, 30 s at most
    except Terminated:
        child.wait(10)
""")


def test_children_are_the_direct_ones_only():
    # This process may have others (an xdist worker's lab): only these two are looked for.
    idle = "import threading; threading.Event().wait(10)"
    with subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; "
                           f"print(subprocess.Popen([sys.executable, '-c', {idle!r}]).pid, flush=True); {idle}"],
                          stdout=subprocess.PIPE, text=True) as child:
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
    parent = subprocess.Popen([sys.executable, "-c", PARENT, IDLER, str(child_file), str(grandchild_file)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    grandchildren: list[int] = []
    try:
        assert parent.stdout.readline().strip() == "ready"
        child = rundir.children(parent.pid)
        assert len(child) == 1
        grandchildren = wait_until(lambda: rundir.children(child[0]), service="test child",
                                   expected="to start its own child", timeout=10)
        parent.send_signal(signal.SIGTERM)
        parent.communicate(timeout=15)
        assert child_file.read_text() == "SIGTERM", "the worker did not get the controller's SIGTERM"
        assert not grandchild_file.exists(), "a worker's own child got the SIGTERM meant for the worker"
    finally:
        parent.kill()
        for pid in grandchildren:
            os.kill(pid, signal.SIGKILL)
