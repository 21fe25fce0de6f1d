"""Checkers: pure functions that turn a History into verdicts and figures.

No I/O here: the caller fetches what the database holds (``present_names``)
and passes it in, so every checker can be tested on a hand-built history.
Times in results are seconds; points in time are relative to the history's
start, like the saved history, so they can be plotted against it.

Uncertainty is kept apart, never folded into a verdict: an ``unknown`` (or
never completed) write may or may not have happened, so it is neither lost
nor an anomaly whichever way the database says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chaoslab.history import COMPLETION_TYPES, OP_FS, History, Op


@dataclass(frozen=True)
class LostWritesResult:
    """Acknowledged writes missing afterwards are lost (the RPO, in writes)."""

    acked: int
    lost: int
    lost_names: tuple[str, ...]
    unknown: int
    unknown_present: int
    unknown_absent: int
    failed: int
    failed_but_present: int
    failed_but_present_names: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No acknowledged write was lost, and no refused write happened anyway."""
        return self.lost == 0 and self.failed_but_present == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lost_names"] = list(self.lost_names)
        data["failed_but_present_names"] = list(self.failed_but_present_names)
        data["ok"] = self.ok
        return data


def check_lost_writes(history: History, present_names: Iterable[str]) -> LostWritesResult:
    """Compare the writes' outcomes with the names the database holds now.

    A write still outstanding when the history ends counts as unknown.
    """
    present = set(present_names)
    outcomes = {inv.value: done.type for inv, done in history.pairs() if inv.f == "write"}
    outcomes.update({op.value: "unknown" for op in history.pending() if op.f == "write"})
    acked = [n for n, t in outcomes.items() if t == "ok"]
    unknown = [n for n, t in outcomes.items() if t == "unknown"]
    failed = [n for n, t in outcomes.items() if t == "fail"]
    lost = sorted(n for n in acked if n not in present)
    failed_present = sorted(n for n in failed if n in present)
    unknown_present = sum(1 for n in unknown if n in present)
    return LostWritesResult(
        acked=len(acked),
        lost=len(lost),
        lost_names=tuple(lost),
        unknown=len(unknown),
        unknown_present=unknown_present,
        unknown_absent=len(unknown) - unknown_present,
        failed=len(failed),
        failed_but_present=len(failed_present),
        failed_but_present_names=tuple(failed_present),
    )


def _fault_time(history: History, after: str | float) -> float:
    """The monotonic time of a marker name, or a time given directly."""
    if isinstance(after, str):
        at = history.event_time(after)
        if at is None:
            raise ValueError(f"no {after!r} event in the history; mark it when the fault is injected")
        return at
    return float(after)


def _write_pairs(history: History) -> list[tuple[Op, Op]]:
    return [(inv, done) for inv, done in history.pairs() if inv.f == "write"]


def time_to_recover(history: History, fault_event: str = "fault") -> float | None:
    """Seconds from the fault marker to the first ok write invoked at or after it (the RTO).

    A write invoked before the fault proves nothing about recovery, so it does
    not count even if it completes later. None when no write ever recovered.
    """
    fault = _fault_time(history, fault_event)
    acks = [done.time for inv, done in _write_pairs(history) if inv.time >= fault and done.type == "ok"]
    return min(acks) - fault if acks else None


@dataclass(frozen=True)
class UnavailabilityWindow:
    """Writes were refused or unanswered from ``start`` until ``end`` (relative times).

    ``end`` is None when no write succeeded again before the history ended.
    """

    start: float
    end: float | None
    failed_writes: int
    unknown_writes: int

    @property
    def duration(self) -> float | None:
        return None if self.end is None else round(self.end - self.start, 6)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration": self.duration}


def unavailability_window(history: History, after: str | float = "fault") -> UnavailabilityWindow | None:
    """From the invoke of the first failed/unknown write after ``after`` to the
    completion of the first ok write invoked after that.

    Starting at the invoke (not the completion) counts a timed-out write's
    wait as unavailable, which is what a user of the API lived through.
    None when no write failed after ``after``.
    """
    since = _fault_time(history, after)
    writes = [(inv, done) for inv, done in _write_pairs(history) if inv.time >= since]
    bad = [inv.time for inv, done in writes if done.type != "ok"]
    if not bad:
        return None
    start = min(bad)
    acks = [done.time for inv, done in writes if inv.time >= start and done.type == "ok"]
    end = min(acks) if acks else None
    in_window = [done for inv, done in writes if inv.time >= start and (end is None or inv.time < end)]
    return UnavailabilityWindow(
        start=round(start - history.start, 6),
        end=None if end is None else round(end - history.start, 6),
        failed_writes=sum(1 for d in in_window if d.type == "fail"),
        unknown_writes=sum(1 for d in in_window if d.type == "unknown"),
    )


def availability_timeline(history: History, bucket: float = 0.1) -> dict[str, Any]:
    """Completions counted per time bucket, per f and type, plus the markers.

    Columnar (one list per series) so a plot is one call per series. Buckets
    are contiguous from 0 to the last completion, empty ones included, so a
    gap in service shows as zeros rather than as a missing x.
    """
    if bucket <= 0:
        raise ValueError("bucket must be positive")
    completions = [op for op in history.ops if op.type != "invoke"]
    indexes = [_bucket_index(op.time - history.start, bucket) for op in completions]
    count = max(indexes) + 1 if indexes else 0
    counts = {f: {t: [0] * count for t in COMPLETION_TYPES} for f in OP_FS}
    for op, index in zip(completions, indexes):
        counts[op.f][op.type][index] += 1
    return {
        "bucket": bucket,
        "t": [round(i * bucket, 6) for i in range(count)],
        "counts": counts,
        "events": [e.to_dict(history.start) for e in history.events],
    }


def _bucket_index(relative_time: float, bucket: float) -> int:
    # The epsilon keeps 0.3 / 0.1 == 2.9999999999999996 in bucket 3.
    return max(0, math.floor(relative_time / bucket + 1e-9))


@dataclass(frozen=True)
class StaleReadsResult:
    """Reads that did not see a write acknowledged before they started.

    ``max_staleness`` is a lower bound: from the write's ack to the stale
    read's invoke, the data was certainly still invisible to that reader.
    """

    reads: int
    stale: int
    stale_ids: tuple[int, ...]
    mismatched: int
    max_staleness: float | None

    @property
    def ok(self) -> bool:
        return self.stale == 0 and self.mismatched == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stale_ids": list(self.stale_ids), "ok": self.ok}


def check_stale_reads(history: History) -> StaleReadsResult:
    """Check ok reads of ids written in this history against the writes' acks.

    Products are only created, never changed, so the latest acknowledged
    value of an id is its write's name: a read that returns nothing (404)
    after the ack is stale, and one that returns another name is mismatched.
    Reads of ids this history did not write are not judged.
    """
    acked: dict[Any, tuple[str, float]] = {
        done.result: (inv.value, done.time)
        for inv, done in _write_pairs(history)
        if done.type == "ok" and done.result is not None
    }
    reads = 0
    stale_ids: list[int] = []
    mismatched = 0
    staleness: list[float] = []
    for inv, done in history.pairs():
        if inv.f != "read" or done.type != "ok" or inv.value not in acked:
            continue
        name, ack_time = acked[inv.value]
        if inv.time < ack_time:
            continue  # the read started before the ack: either answer is fine
        reads += 1
        if done.result is None:
            stale_ids.append(inv.value)
            staleness.append(inv.time - ack_time)
        elif done.result != name:
            mismatched += 1
    return StaleReadsResult(
        reads=reads,
        stale=len(stale_ids),
        stale_ids=tuple(stale_ids),
        mismatched=mismatched,
        max_staleness=round(max(staleness), 6) if staleness else None,
    )


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(history: History) -> dict[str, Any]:
    """Counts per f and completion type, with latency p50/p95/max in seconds.

    Latency is measured per type because a timed-out op's latency is the
    client timeout, which would drown the p95 of the ops that worked.
    """
    latencies: dict[str, dict[str, list[float]]] = {f: {t: [] for t in COMPLETION_TYPES} for f in OP_FS}
    for inv, done in history.pairs():
        latencies[inv.f][done.type].append(done.time - inv.time)
    pending = history.pending()
    summary: dict[str, Any] = {}
    for f in OP_FS:
        by_type = latencies[f]
        summary[f] = {
            "invoked": sum(len(v) for v in by_type.values()) + sum(1 for op in pending if op.f == f),
            **{t: len(by_type[t]) for t in COMPLETION_TYPES},
            "pending": sum(1 for op in pending if op.f == f),
            "latency": {t: _latency_stats(by_type[t]) for t in COMPLETION_TYPES},
        }
    ops = history.ops
    summary["duration"] = round(max(op.time for op in ops) - history.start, 6) if ops else 0.0
    summary["events"] = [e.to_dict(history.start) for e in history.events]
    return summary


def _latency_stats(values: list[float]) -> dict[str, float | int | None]:
    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, 6)

    return {
        "count": len(values),
        "p50": rounded(percentile(values, 50)),
        "p95": rounded(percentile(values, 95)),
        "max": rounded(max(values)) if values else None,
    }


@dataclass(frozen=True)
class ReadsResult:
    """Reads of known, unchanging products: did each one answer, and answer right?"""

    total: int
    failed: list[Op]                     # fail or unknown: an error or no answer
    wrong: list[tuple[Any, Any]]         # (id, what came back) where the name differs

    @property
    def ok(self) -> bool:
        return not self.failed and not self.wrong


def check_reads(history: History, expected_names: Mapping[Any, str]) -> ReadsResult:
    """Every completed read against the names the products were created with."""
    pairs = [(invoke, done) for invoke, done in history.pairs() if invoke.f == "read"]
    failed = [done for _, done in pairs if done.type != "ok"]
    wrong = [(invoke.value, done.result) for invoke, done in pairs
             if done.type == "ok" and done.result != expected_names.get(invoke.value)]
    return ReadsResult(total=len(pairs), failed=failed, wrong=wrong)
