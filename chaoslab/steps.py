"""Scenario steps that parts E and F and the Patroni and Sentinel bonuses share.

Each of those scenarios drives the API with a workload, breaks something, waits for
the API to answer again and judges the history. The steps are written once here, so
that a scenario reads as the brief's steps, and every failover is measured and judged
by the same definitions (chaoslab.checkers): an RTO of part F and an RTO of Patroni
are the same figure, and the report may compare them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from . import api_client, checkers, pg
from .checkers import FailoverFigures, LostWritesResult, ReadsResult, WorkloadReadsResult
from .history import History
from .phases import phase
from .waits import wait_until
from .workload import Workload

REPORTS_DIR = Path(__file__).resolve().parent.parent / "reports" / "data"
# F4: writes must come back through the unchanged API within this, retried until then.
WRITE_DEADLINE_S = 30
# How long a reader may still miss an acknowledged write: the replication lag, with a
# wide margin (it is about 10 ms on this lab); a replica that stopped replaying, or a
# cached "not found", stays wrong far longer.
READ_GRACE_S = 1.0


# -- the workload and the API ----------------------------------------------------------------
def post_product(api, name: str) -> requests.Response:
    """One write through the API, as a student would make it with curl."""
    return requests.post(f"{api.base_url}/products", json={"name": name, "price_cents": 100},
                         timeout=api_client.TIMEOUT_S)


def failover_workload(api, *, max_seconds: float = 60, max_ops: int = 4000) -> Workload:
    """Three writers and a reader of the newest acknowledged write, as long as a failover lasts."""
    return Workload(api.base_url, writers=3, readers=1, max_ops=max_ops, max_seconds=max_seconds,
                    request_timeout=3)


def read_load(api, ids: list[int], *, seconds: float, readers: int = 4, pause: float = 0.002) -> Workload:
    """Concurrent reads of known products, bounded in time and count."""
    return Workload(api.base_url, writers=0, readers=readers, read_ids=ids, max_ops=20000, max_seconds=seconds,
                    request_timeout=5, pause_between_ops=pause)


def create_products(lab, api, count: int, prefix: str = "item") -> dict[int, str]:
    """``count`` products through the API, replayed on the replica; {id: name}."""
    products = {api_client.create(api.base_url, f"{prefix}-{i}", 100 + i)["id"]: f"{prefix}-{i}"
                for i in range(count)}
    lab.wait_caught_up()
    return products


@phase("workload")
def wait_for_new_acks(workload: Workload, count: int, timeout: float = 20) -> None:
    """Until the workload itself has ``count`` more acknowledged writes than now."""
    target = len(workload.acked_ids) + count
    wait_until(lambda: len(workload.acked_ids) >= target, service="api",
               expected=f"{count} more acknowledged writes from the workload", timeout=timeout)


@phase("recovery")
def wait_for_writes_through_api(api, timeout: float = WRITE_DEADLINE_S) -> None:
    """F4: retry a write through the unchanged, un-restarted API until it is acknowledged."""
    wait_until(lambda: post_product(api, "after-failover").status_code == 201, service="api",
               expected="a write through the unchanged API to be acknowledged", timeout=timeout,
               interval=0.1, log=api.log)


@phase("checks")
def present_names(lab, service: str) -> set[str]:
    """The product names ``service`` holds (a node, or HAProxy's write frontend)."""
    with pg.connect(lab.endpoint(service), lab.creds) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM products").fetchall()}


def read_latencies_ms(history: History, after: float) -> list[float]:
    """Latencies of the reads invoked at or after ``after`` (monotonic)."""
    return [(done.time - invoke.time) * 1000 for invoke, done in history.pairs()
            if invoke.f == "read" and invoke.time >= after]


# -- evidence ---------------------------------------------------------------------------------
def save_timeline(history: History, request: pytest.FixtureRequest, measure) -> None:
    """The history and its availability timeline beside the JUnit report, attached to the test."""
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{Path(str(request.node.path)).stem}-{request.node.name}").strip("-")
    timeline = REPORTS_DIR / f"timeline-{slug}.json"
    timeline.write_text(json.dumps(checkers.availability_timeline(history, bucket=0.1)))
    history.save(REPORTS_DIR / f"history-{slug}.json")
    measure.attach("timeline", timeline)


@dataclass(frozen=True)
class FailoverVerdict:
    """What a failover scenario's history says, once recorded."""

    lost: LostWritesResult
    figures: FailoverFigures
    reads: WorkloadReadsResult

    def assert_sound(self) -> None:
        """What every failover must show, whatever its kind: writes came back, nothing the API
        refused was committed, and every read answered and saw the writes acknowledged before it."""
        assert self.figures.longest_write_outage_s is not None, "writes through the API never came back"
        assert self.lost.failed_but_present == 0, (
            f"writes the API refused were committed anyway: {list(self.lost.failed_but_present_names[:10])}")
        assert not self.reads.failed, (
            f"{len(self.reads.failed)} reads failed while a node could serve them: "
            f"{[op.error for op in self.reads.failed[:5]]}")
        assert not self.reads.stale, (
            f"{len(self.reads.stale)} reads missed a write acknowledged over {READ_GRACE_S} s before them, up to "
            f"{self.reads.max_stale_age} s after its ack (id, answer, seconds since the ack): {self.reads.stale[:5]}")

    def assert_nothing_lost(self, why: str) -> None:
        assert self.lost.lost == 0, f"{why}: acknowledged writes lost: {list(self.lost.lost_names[:10])}"


@phase("checks")
def judge_failover(history: History, present: set[str], measure, request: pytest.FixtureRequest, *,
                   kind: str, **labels: str) -> FailoverVerdict:
    """Record a failover's figures, by their one definition each, and return the verdict.

    ``kind`` says which failovers its figures may be compared with: ``manual`` (part F),
    ``automatic`` (Patroni after a fault) or ``planned`` (a switchover). ``labels``
    describe the case (fault, switch, synchronous...). Figures a history cannot hold
    (no RTO without a fault) are not recorded, rather than recorded as zero.
    """
    lost = checkers.check_lost_writes(history, present)
    figures = checkers.failover_figures(history)
    reads = checkers.check_workload_reads(history, grace=READ_GRACE_S, lost_names=lost.lost_names)
    save_timeline(history, request, measure)
    measure("failover_kind", kind)
    for name, value in labels.items():
        measure(name, value)
    for name, value in figures.rounded().items():
        if value is not None:
            measure(name, value, checkers.measure(name).unit)
    measure("acked_writes", lost.acked)
    measure("lost_writes", lost.lost)
    measure("unknown_writes", lost.unknown)
    measure("failed_but_present_writes", lost.failed_but_present)
    measure("reads_judged", reads.judged)
    measure("stale_reads", len(reads.stale))
    measure("failed_reads", len(reads.failed))
    return FailoverVerdict(lost, figures, reads)


def record_reads(measure, reads: ReadsResult) -> None:
    """The reads of known products during an outage (parts E, Sentinel): how many, how many failed."""
    measure("reads_total", reads.total)
    measure("failed_reads", len(reads.failed))


def assert_reads_answered(reads: ReadsResult, during: str) -> None:
    assert reads.failed == [], f"reads failed during {during}: {[op.error for op in reads.failed[:5]]}"
    assert reads.wrong == [], f"reads returned wrong values during {during}: {reads.wrong[:5]}"
