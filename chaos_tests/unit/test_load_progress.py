"""`load`'s once-a-second line, and the parser of it that its watchers use: one format, one owner."""

from __future__ import annotations

from chaoslab.history import History
from chaoslab.load import progress_counts, progress_line


def test_a_progress_line_parses_back_into_its_counts():
    history = History(start=100.0)
    for process, outcome in enumerate(["ok", "ok", "fail", "unknown"]):
        history.invoke(process, "write", f"w{process}", at=100.1)
        history.complete(process, outcome, at=100.5)
    line = progress_line(history, elapsed=1.0, now=101.0)
    assert progress_counts(line) == (2, 1, 1), line
    assert progress_counts(progress_line(History(start=0.0), elapsed=5.0, now=5.0)) == (0, 0, 0)   # no answer
    assert progress_counts("load on http://127.0.0.1:3000: 2 writers, 1 readers, at most 30 s") is None
