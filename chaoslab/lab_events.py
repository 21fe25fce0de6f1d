"""What the operator did to a lab left running by `python -m chaoslab up`, and when.

`fault`, `promote` and `switch` append one line each to the run directory's events file,
with the wall-clock times the action started and ended; `load` reads them back to put the
scenarios' markers (FAULT, ACTION, NEW_PRIMARY) on its own history, so that a failover done
by hand is measured by the same functions as part F's.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

from .checkers import ACTION, FAULT, NEW_PRIMARY
from .history import History
from .rundir import RunDir
from .topology import PRIMARY

EVENTS_FILE = "events.jsonl"
# A fault that takes the primary away: what part F measures from.
PRIMARY_LOST = ("stop", "kill", "pause")


@dataclass(frozen=True)
class LabEvent:
    kind: str        # fault, promote or switch
    detail: str      # e.g. "kill db-primary"
    started: float   # time.time() when the command began the action
    ended: float     # ... and when it was done
    # A fault on the node that was primary when it began, whatever its name: Patroni's
    # leader (pg-1 or pg-2). On the brief's topology, the primary is db-primary by name.
    on_primary: bool = False

    @property
    def loses_the_primary(self) -> bool:
        action, _, service = self.detail.partition(" ")
        return self.kind == "fault" and action in PRIMARY_LOST and (self.on_primary or service == PRIMARY)


@contextmanager
def recorded(run_dir: RunDir, kind: str, detail: str, *, on_primary: bool = False) -> Iterator[None]:
    """Run the block (the action) and append it to the events file once it succeeded."""
    started = time.time()
    yield
    event = LabEvent(kind, detail, started, time.time(), on_primary)
    with open(run_dir.path / EVENTS_FILE, "a") as events:
        events.write(json.dumps(asdict(event)) + "\n")


def read_events(run_dir: RunDir) -> list[LabEvent]:
    try:
        lines = (run_dir.path / EVENTS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [LabEvent(**json.loads(line)) for line in lines if line.strip()]


def mark_failover(history: History, events: list[LabEvent], *, since: float) -> LabEvent | None:
    """Put part F's markers on ``history`` from the events at or after ``since`` (wall clock):
    FAULT when the first fault on the primary was done, ACTION when the first promotion or
    switch after it began, NEW_PRIMARY when the first switch after it was done (a promotion
    when there is none: the role-aware config follows it alone). Returns the fault, if any."""
    to_monotonic = time.monotonic() - time.time()   # the history's clock, from the events' one
    fault = next((event for event in events if event.started >= since and event.loses_the_primary), None)
    if fault is None:
        return None
    history.mark(FAULT, at=fault.ended + to_monotonic)
    after = [event for event in events if event.started >= fault.ended and event.kind in ("promote", "switch")]
    if after:
        history.mark(ACTION, at=after[0].started + to_monotonic)
        switch = next((event for event in after if event.kind == "switch"), after[0])
        history.mark(NEW_PRIMARY, at=switch.ended + to_monotonic)
    return fault
