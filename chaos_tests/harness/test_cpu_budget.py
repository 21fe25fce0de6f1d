"""`python -m chaoslab cpu` measured for real: a command that burns a known CPU time is found
in the kernel's accounting, under its kind, and its exit code comes back."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.harness
REPO = Path(__file__).resolve().parents[2]
SPIN = ("import sys, time\n"
        "started = time.process_time()\n"
        "while time.process_time() - started < 1.0: pass\n"
        "sys.exit(3)")


def test_a_command_that_burns_a_second_of_cpu_is_accounted_for_and_its_exit_code_kept():
    done = subprocess.run([sys.executable, "-m", "chaoslab", "cpu", "--", sys.executable, "-c", SPIN],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, f"the measured command's exit code was not passed on:\n{done.stdout}{done.stderr}"
    line = re.search(r"^  python, other\s+(\d+)\s+([\d.]+)", done.stdout, re.MULTILINE)
    assert line, f"no python process in the accounting summary:\n{done.stdout}{done.stderr}"
    assert 0.9 <= float(line.group(2)) < 10, f"the spinning process's CPU time was misread:\n{done.stdout}"
    assert re.search(r"machine: \d+ CPUs, [\d.]+ CPU-seconds", done.stdout)
    assert "warning" not in done.stderr, f"the accounting missed the command's own record:\n{done.stderr}"


def test_without_a_command_it_says_what_to_give():
    done = subprocess.run([sys.executable, "-m", "chaoslab", "cpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "after --" in done.stderr
