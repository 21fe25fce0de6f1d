"""Tests of the harness itself: clean-up after Ctrl-C and SIGKILL, the reaper, failure
messages. Each starts its own servers as local processes, whatever ``--backend`` says,
so they are marked ``harness``: the compose suite does not select them, and they are
never graded."""
