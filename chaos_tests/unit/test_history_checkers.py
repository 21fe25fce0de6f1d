"""History and checkers on hand-built histories: exact counts, no network."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from chaoslab.checkers import (
    availability_timeline,
    check_lost_writes,
    check_stale_reads,
    percentile,
    summarize,
    time_to_recover,
    unavailability_window,
)
from chaoslab.history import History, Op


def op(h: History, process: int, f: str, value: object, t0: float, t1: float, type: str, result: object = None) -> None:
    """Append one whole op (invoke at t0, completion at t1)."""
    h.invoke(process, f, value, at=t0)  # type: ignore[arg-type]
    h.complete(process, type, result=result, error=None if type == "ok" else "boom", at=t1)  # type: ignore[arg-type]


# --- History ---------------------------------------------------------------


def test_pairs_match_completions_per_process_when_interleaved() -> None:
    h = History(start=0.0)
    h.invoke(0, "write", "a", at=1.0)
    h.invoke(1, "read", 7, at=1.1)
    h.complete(1, "ok", result="x", at=1.2)
    h.invoke(1, "read", 8, at=1.3)
    h.complete(0, "unknown", error="timeout", at=3.0)
    h.complete(1, "fail", error="HTTP 503", at=1.4)

    pairs = h.pairs()

    assert [(inv.process, inv.value, done.type, done.time) for inv, done in pairs] == [
        (0, "a", "unknown", 3.0),
        (1, 7, "ok", 1.2),
        (1, 8, "fail", 1.4),
    ]
    assert pairs[1][1].result == "x"
    assert pairs[2][1].error == "HTTP 503"
    assert h.pending() == []


def test_pending_holds_invokes_without_completion_and_pairs_skip_them() -> None:
    h = History(start=0.0)
    op(h, 0, "write", "a", 1.0, 1.1, "ok", 1)
    h.invoke(1, "write", "b", at=1.5)

    assert [o.value for o in h.pending()] == ["b"]
    assert len(h.pairs()) == 1


def test_a_process_cannot_have_two_outstanding_ops() -> None:
    h = History()
    h.invoke(0, "write", "a")
    with pytest.raises(ValueError, match="outstanding"):
        h.invoke(0, "write", "b")


def test_completion_must_follow_a_matching_invoke() -> None:
    h = History()
    with pytest.raises(ValueError, match="without an invoke"):
        h.complete(3, "ok")
    h.invoke(0, "write", "a", at=1.0)
    with pytest.raises(ValueError, match="does not match"):
        h.append(Op(0, "ok", "write", "other", 2.0))
    with pytest.raises(ValueError, match="completion is one of"):
        h.complete(0, "invoke")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown op type"):
        h.append(Op(0, "done", "write", "a", 2.0))  # type: ignore[arg-type]


def test_events_and_json_use_times_relative_to_start(tmp_path: Path) -> None:
    h = History(start=100.0)
    op(h, 0, "write", "a", 100.5, 100.75, "ok", 42)
    h.mark("fault", at=101.0)
    h.mark("promote", at=102.5)
    h.mark("fault", at=103.0)

    assert h.event_time("fault") == 101.0
    assert h.event_time("switch") is None
    data = json.loads(h.to_json())
    assert data["ops"] == [
        {"process": 0, "type": "invoke", "f": "write", "value": "a", "time": 0.5, "result": None, "error": None},
        {"process": 0, "type": "ok", "f": "write", "value": "a", "time": 0.75, "result": 42, "error": None},
    ]
    assert data["events"] == [
        {"name": "fault", "time": 1.0},
        {"name": "promote", "time": 2.5},
        {"name": "fault", "time": 3.0},
    ]

    loaded = History.load(h.save(tmp_path / "sub" / "history.json"))
    assert loaded.to_dict() == h.to_dict()
    assert loaded.pairs()[0][1].result == 42


def test_concurrent_appends_are_all_kept_and_paired() -> None:
    h = History()

    def worker(process: int) -> None:
        for i in range(500):
            h.invoke(process, "write", f"w{process}-{i}")
            h.complete(process, "ok", result=i)

    threads = [threading.Thread(target=worker, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(h) == 8 * 500 * 2
    pairs = h.pairs()
    assert len(pairs) == 8 * 500
    assert all(inv.value == f"w{inv.process}-{done.result}" for inv, done in pairs)


# --- lost writes -------------------------------------------------------------


def lost_writes_history() -> History:
    h = History(start=0.0)
    op(h, 0, "write", "a", 1.0, 1.1, "ok", 1)
    op(h, 0, "write", "b", 1.2, 1.3, "ok", 2)
    op(h, 0, "write", "c", 1.4, 1.5, "ok", 3)
    op(h, 1, "write", "d", 1.0, 1.1, "fail")
    op(h, 1, "write", "e", 1.2, 1.3, "fail")
    op(h, 1, "write", "f", 1.4, 1.5, "unknown")
    op(h, 1, "write", "g", 1.6, 1.7, "unknown")
    op(h, 0, "write", "h", 1.6, 1.7, "unknown")
    op(h, 2, "read", 1, 1.0, 1.1, "ok", "a")
    h.invoke(0, "write", "i", at=2.0)  # never completed: as uncertain as unknown
    return h


def test_lost_writes_counts_each_outcome_apart() -> None:
    result = check_lost_writes(lost_writes_history(), {"a", "c", "e", "f", "i", "not-ours"})

    assert result.acked == 3
    assert result.lost == 1
    assert result.lost_names == ("b",)
    assert result.unknown == 4
    assert result.unknown_present == 2
    assert result.unknown_absent == 2
    assert result.failed == 2
    assert result.failed_but_present == 1
    assert result.failed_but_present_names == ("e",)
    assert result.ok is False
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["lost_names"] == ["b"]
    assert as_dict["ok"] is False


def test_lost_writes_is_ok_when_every_ack_survives_whatever_the_unknowns_did() -> None:
    result = check_lost_writes(lost_writes_history(), {"a", "b", "c", "g"})

    assert (result.acked, result.lost, result.unknown_present, result.failed_but_present) == (3, 0, 1, 0)
    assert result.ok is True


def test_a_failed_write_that_happened_anyway_is_an_anomaly() -> None:
    result = check_lost_writes(lost_writes_history(), {"a", "b", "c", "d"})

    assert result.lost == 0
    assert result.failed_but_present_names == ("d",)
    assert result.ok is False


# --- recovery ----------------------------------------------------------------


def failover_history(start: float = 0.0) -> History:
    h = History(start=start)
    op(h, 0, "write", "before", start + 9.9, start + 10.5, "ok", 1)  # invoked before the fault
    h.mark("fault", at=start + 10.0)
    op(h, 1, "write", "refused", start + 10.0, start + 10.1, "fail")
    op(h, 1, "write", "timed-out", start + 10.2, start + 12.2, "unknown")
    op(h, 0, "write", "slow-ok", start + 11.0, start + 11.25, "ok", 2)
    op(h, 2, "write", "first-ok", start + 11.1, start + 11.2, "ok", 3)
    op(h, 2, "write", "later-fail", start + 11.3, start + 11.4, "fail")
    op(h, 3, "read", 1, start + 10.0, start + 10.1, "fail")  # reads do not count
    return h


def test_time_to_recover_runs_from_fault_to_first_ack_of_a_write_invoked_after_it() -> None:
    assert time_to_recover(failover_history()) == pytest.approx(1.2)


def test_time_to_recover_is_none_without_recovery_and_needs_the_marker() -> None:
    h = History(start=0.0)
    h.mark("fault", at=1.0)
    op(h, 0, "write", "a", 0.5, 1.5, "ok", 1)
    op(h, 0, "write", "b", 1.5, 1.6, "fail")
    assert time_to_recover(h) is None
    with pytest.raises(ValueError, match="'promote'"):
        time_to_recover(h, "promote")


def test_unavailability_window_from_first_bad_write_to_first_ack_after_it() -> None:
    h = failover_history(start=5.0)
    # Invoked before the first failure: its ack says nothing about recovery.
    op(h, 4, "write", "racing", 5.0 + 9.97, 5.0 + 10.3, "ok", 4)
    window = unavailability_window(h, after=5.0 + 9.95)

    assert window is not None
    assert window.start == pytest.approx(10.0)
    assert window.end == pytest.approx(11.2)
    assert window.duration == pytest.approx(1.2)
    assert (window.failed_writes, window.unknown_writes) == (1, 1)
    assert json.loads(json.dumps(window.to_dict()))["duration"] == pytest.approx(1.2)


def test_unavailability_window_is_none_without_failures_and_open_without_recovery() -> None:
    h = History(start=0.0)
    h.mark("fault", at=1.0)
    op(h, 0, "write", "a", 1.0, 1.1, "ok", 1)
    assert unavailability_window(h) is None

    op(h, 0, "write", "b", 2.0, 2.1, "fail")
    op(h, 0, "write", "c", 2.2, 4.2, "unknown")
    window = unavailability_window(h, after=1.5)
    assert window is not None
    assert (window.start, window.end, window.duration) == (2.0, None, None)
    assert (window.failed_writes, window.unknown_writes) == (1, 1)


# --- timeline, staleness, summary ------------------------------------------------


def test_availability_timeline_buckets_completions_per_f_and_type() -> None:
    h = History(start=50.0)
    op(h, 0, "write", "a", 50.0, 50.05, "ok", 1)
    op(h, 0, "write", "b", 50.1, 50.15, "fail")
    op(h, 1, "write", "c", 50.1, 50.16, "fail")
    op(h, 2, "read", 1, 50.2, 50.3, "ok", "a")  # 0.3 / 0.1 is 2.999...: still bucket 3
    op(h, 1, "write", "d", 50.2, 50.35, "unknown")
    h.mark("fault", at=50.12)

    timeline = availability_timeline(h, bucket=0.1)

    assert timeline["t"] == [0.0, 0.1, 0.2, 0.3]
    assert timeline["counts"]["write"] == {"ok": [1, 0, 0, 0], "fail": [0, 2, 0, 0], "unknown": [0, 0, 0, 1]}
    assert timeline["counts"]["read"] == {"ok": [0, 0, 0, 1], "fail": [0, 0, 0, 0], "unknown": [0, 0, 0, 0]}
    assert timeline["events"] == [{"name": "fault", "time": 0.12}]
    assert json.loads(json.dumps(timeline)) == timeline


def test_availability_timeline_of_an_empty_history_is_empty() -> None:
    timeline = availability_timeline(History())
    assert timeline["t"] == []
    assert timeline["counts"]["write"]["ok"] == []
    with pytest.raises(ValueError):
        availability_timeline(History(), bucket=0)


def test_stale_reads_are_reads_that_miss_a_write_acked_before_they_started() -> None:
    h = History(start=0.0)
    op(h, 0, "write", "a", 0.5, 1.0, "ok", 1)
    op(h, 1, "read", 1, 0.9, 1.05, "ok", None)  # started before the ack: not judged
    op(h, 1, "read", 1, 1.3, 1.4, "ok", None)  # stale for at least 0.3 s
    op(h, 1, "read", 1, 1.5, 1.6, "ok", "a")
    op(h, 1, "read", 1, 2.0, 2.1, "ok", None)  # stale for at least 1.0 s
    op(h, 0, "write", "b", 1.5, 2.0, "ok", 2)
    op(h, 1, "read", 2, 2.1, 2.2, "ok", "zzz")  # wrong name
    op(h, 1, "read", 99, 2.3, 2.4, "ok", None)  # not written here: not judged
    op(h, 1, "read", 1, 2.5, 2.6, "fail")  # no answer: not judged

    result = check_stale_reads(h)

    assert (result.reads, result.stale, result.mismatched) == (4, 2, 1)
    assert result.stale_ids == (1, 1)
    assert result.max_staleness == pytest.approx(1.0)
    assert result.ok is False
    assert json.loads(json.dumps(result.to_dict()))["stale_ids"] == [1, 1]


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([0.4, 0.1, 0.3, 0.2], 50) == pytest.approx(0.25)
    assert percentile([0.4, 0.1, 0.3, 0.2], 95) == pytest.approx(0.385)


def test_summarize_counts_and_latencies_per_f_and_type() -> None:
    h = History(start=0.0)
    for i, latency in enumerate([0.1, 0.2, 0.3, 0.4]):
        op(h, 0, "write", f"w{i}", float(i), i + latency, "ok", i)
    op(h, 0, "write", "x", 5.0, 5.5, "fail")
    op(h, 0, "write", "y", 6.0, 8.0, "unknown")
    op(h, 1, "read", 1, 1.0, 1.25, "ok", "w1")
    h.invoke(0, "write", "z", at=9.0)
    h.mark("fault", at=4.0)

    summary = summarize(h)

    write = summary["write"]
    assert (write["invoked"], write["ok"], write["fail"], write["unknown"], write["pending"]) == (7, 4, 1, 1, 1)
    assert write["latency"]["ok"]["count"] == 4
    assert write["latency"]["ok"]["p50"] == pytest.approx(0.25)
    assert write["latency"]["ok"]["p95"] == pytest.approx(0.385)
    assert write["latency"]["ok"]["max"] == pytest.approx(0.4)
    assert write["latency"]["unknown"] == {"count": 1, "p50": 2.0, "p95": 2.0, "max": 2.0}
    read = summary["read"]
    assert (read["invoked"], read["ok"], read["fail"]) == (1, 1, 0)
    assert read["latency"]["fail"] == {"count": 0, "p50": None, "p95": None, "max": None}
    assert summary["duration"] == 9.0
    assert summary["events"] == [{"name": "fault", "time": 4.0}]
    json.dumps(summary)


def test_check_reads_counts_failed_and_wrong_reads():
    from chaoslab.checkers import check_reads
    history = History(start=0.0)
    history.invoke(0, "read", 1, at=0.1)
    history.complete(0, "ok", result="a", at=0.2)
    history.invoke(0, "read", 2, at=0.3)
    history.complete(0, "ok", result="not-b", at=0.4)
    history.invoke(1, "read", 1, at=0.3)
    history.complete(1, "fail", error="HTTP 500", at=0.5)
    history.invoke(1, "read", 2, at=0.6)
    history.complete(1, "unknown", error="timeout", at=2.6)
    result = check_reads(history, {1: "a", 2: "b"})
    assert result.total == 4
    assert [op.error for op in result.failed] == ["HTTP 500", "timeout"]
    assert result.wrong == [(2, "not-b")]
    assert not result.ok
