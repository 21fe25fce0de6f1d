"""History and checkers on hand-built histories: exact counts, no network."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from chaoslab.checkers import (
    FAULT,
    MEASURES,
    NEW_PRIMARY,
    availability_timeline,
    check_lost_writes,
    check_workload_reads,
    failover_figures,
    first_ack_after,
    longest_write_outage,
    measure,
    percentile,
    rto,
    writes_acked_between,
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


def test_rto_runs_from_fault_to_first_ack_of_a_write_invoked_after_it() -> None:
    assert rto(failover_history()) == pytest.approx(1.2)


def test_rto_is_none_without_recovery_and_needs_the_marker() -> None:
    h = History(start=0.0)
    h.mark(FAULT, at=1.0)
    op(h, 0, "write", "a", 0.5, 1.5, "ok", 1)
    op(h, 0, "write", "b", 1.5, 1.6, "fail")
    assert rto(h) is None
    with pytest.raises(ValueError, match="'promote'"):
        first_ack_after(h, "promote")


def test_rto_splits_into_the_action_and_the_systems_own_recovery() -> None:
    h = failover_history()
    h.mark(NEW_PRIMARY, at=10.9)
    figures = failover_figures(h)
    assert figures.rto_s == pytest.approx(1.2)
    assert figures.time_to_new_primary_s == pytest.approx(0.9)
    # slow-ok (invoked 11.0, acked 11.25) is not first: first-ok was invoked later but acked sooner
    assert figures.write_recovery_s == pytest.approx(0.3)
    # "later-fail" is the last write: writes never came back after it
    assert figures.longest_write_outage_s is None


def test_longest_write_outage_is_the_longest_refused_stretch_and_zero_without_refusals() -> None:
    h = History(start=0.0)
    op(h, 0, "write", "a", 0.0, 0.1, "ok", 1)
    op(h, 0, "write", "b", 0.2, 0.3, "fail")
    op(h, 0, "write", "c", 0.4, 0.5, "ok", 2)       # a 0.3 s outage
    op(h, 0, "write", "d", 1.0, 2.0, "unknown")
    op(h, 0, "write", "e", 2.1, 2.2, "fail")
    op(h, 0, "write", "f", 2.3, 2.4, "ok", 3)       # a 1.4 s outage
    assert longest_write_outage(h) == pytest.approx(1.4)
    assert longest_write_outage(History(start=0.0)) == 0.0


def test_a_planned_switchover_has_no_rto_only_its_outage() -> None:
    h = History(start=0.0)
    op(h, 0, "write", "a", 0.0, 0.1, "ok", 1)
    op(h, 0, "write", "b", 0.2, 0.3, "fail")
    op(h, 0, "write", "c", 0.4, 0.5, "ok", 2)
    figures = failover_figures(h)
    assert (figures.rto_s, figures.time_to_new_primary_s, figures.write_recovery_s) == (None, None, None)
    assert figures.longest_write_outage_s == pytest.approx(0.3)
    assert figures.rounded()["longest_write_outage_s"] == 0.3


def test_writes_acked_between_two_events_are_those_invoked_after_the_first() -> None:
    h = failover_history()
    h.mark("switch", at=11.22)
    # "before" was invoked before the fault; "slow-ok" is acked after the switch
    assert writes_acked_between(h, FAULT, "switch") == ["first-ok"]


def test_every_measure_has_a_unit_a_label_and_a_definition() -> None:
    assert all(m.label and m.definition and m.name == name for name, m in MEASURES.items())
    assert measure("rto_s").unit == "s"
    with pytest.raises(KeyError, match="not a defined measure"):
        measure("rto")


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


def test_workload_reads_must_see_each_acked_write_once_the_grace_has_passed() -> None:
    h = History(start=0.0)
    op(h, 0, "write", "a", 0.5, 1.0, "ok", 1)
    op(h, 1, "read", 1, 0.9, 1.05, "ok", None)  # started before the ack: not judged
    op(h, 1, "read", 1, 1.1, 1.2, "ok", None)   # within the grace: not judged
    op(h, 1, "read", 1, 1.3, 1.4, "ok", None)   # stale, 0.3 s after the ack
    op(h, 1, "read", 1, 1.5, 1.6, "ok", "a")
    op(h, 0, "write", "b", 1.5, 2.0, "ok", 2)
    op(h, 1, "read", 2, 2.5, 2.6, "ok", "zzz")  # another name: stale too
    op(h, 1, "read", 99, 2.7, 2.8, "ok", None)  # not written here: not judged
    op(h, 1, "read", 1, 2.9, 3.0, "fail")       # no answer: a failure
    op(h, 0, "write", "lost", 3.0, 3.1, "ok", 3)
    op(h, 1, "read", 3, 3.5, 3.6, "ok", None)   # a lost write: the lost-write check counts it

    result = check_workload_reads(h, grace=0.25, lost_names={"lost"})

    assert result.judged == 3
    assert [(pid, got) for pid, got, _ in result.stale] == [(1, None), (2, "zzz")]
    assert result.max_stale_age == pytest.approx(0.5)
    assert [op.error for op in result.failed] == ["boom"]
    assert not result.ok
    assert check_workload_reads(h, grace=1.0, lost_names={"lost"}).stale == []


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([0.4, 0.1, 0.3, 0.2], 50) == pytest.approx(0.25)
    assert percentile([0.4, 0.1, 0.3, 0.2], 95) == pytest.approx(0.385)


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
