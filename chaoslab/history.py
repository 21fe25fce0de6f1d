"""The history of a run: what the workload asked for, what it was told, and when.

Jepsen's idea: a client does not know what the system did, only what it was
told. So every operation is recorded twice, once when it is invoked and once
when it completes, and the completion says how sure we are:

- ``ok``: the API acknowledged it (2xx); it happened.
- ``fail``: a definite refusal (4xx/5xx, or the request never left the
  client); it did not happen.
- ``unknown``: timeout, dropped connection, ambiguous gateway error; it may or
  may not have happened, and a checker must allow both.

Times are ``time.monotonic()`` so that a clock step during a run cannot bend
the figures; they are made relative to ``History.start`` when saved.
Scenario markers (``mark('fault')``) live in the same history so that checkers
can measure from them.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OpType = Literal["invoke", "ok", "fail", "unknown"]
OpF = Literal["write", "read"]

OP_TYPES: tuple[str, ...] = ("invoke", "ok", "fail", "unknown")
COMPLETION_TYPES: tuple[str, ...] = ("ok", "fail", "unknown")
OP_FS: tuple[str, ...] = ("write", "read")


@dataclass(frozen=True)
class Op:
    """One line of the history.

    ``value`` is the write's unique name or the read's product id; ``result``
    is what came back (the new id for a write, the name for a read).
    """

    process: int
    type: OpType
    f: OpF
    value: Any
    time: float
    result: Any = None
    error: str | None = None

    def to_dict(self, start: float = 0.0) -> dict[str, Any]:
        """A JSON-ready dict with ``time`` relative to ``start``."""
        return {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
            "time": round(self.time - start, 6),
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True)
class Event:
    """A named scenario marker, e.g. ``fault``, ``promote``, ``switch``."""

    name: str
    time: float

    def to_dict(self, start: float = 0.0) -> dict[str, Any]:
        return {"name": self.name, "time": round(self.time - start, 6)}


class History:
    """A thread-safe, append-only record of ops and scenario events.

    Appends are checked so that a broken client shows up at once rather than
    as a wrong verdict later: a process has at most one outstanding op, and a
    completion must match its invoke (same ``f`` and ``value``).
    """

    def __init__(self, start: float | None = None) -> None:
        self.start: float = time.monotonic() if start is None else start
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._events: list[Event] = []
        self._outstanding: dict[int, Op] = {}

    # --- recording -------------------------------------------------------

    def append(self, op: Op) -> Op:
        """Record ``op``; raise ``ValueError`` if it breaks the invoke/complete pairing."""
        if op.type not in OP_TYPES:
            raise ValueError(f"unknown op type {op.type!r}")
        if op.f not in OP_FS:
            raise ValueError(f"unknown op f {op.f!r}")
        with self._lock:
            pending = self._outstanding.get(op.process)
            if op.type == "invoke":
                if pending is not None:
                    raise ValueError(f"process {op.process} already has an outstanding op: {pending}")
                self._outstanding[op.process] = op
            else:
                if pending is None:
                    raise ValueError(f"completion without an invoke for process {op.process}: {op}")
                if (pending.f, pending.value) != (op.f, op.value):
                    raise ValueError(f"completion {op} does not match invoke {pending}")
                del self._outstanding[op.process]
            self._ops.append(op)
        return op

    def invoke(self, process: int, f: OpF, value: Any, *, at: float | None = None) -> Op:
        """Record that ``process`` starts ``f(value)`` (now, or at ``at``)."""
        return self.append(Op(process, "invoke", f, value, _now(at)))

    def complete(
        self,
        process: int,
        type: OpType,
        *,
        result: Any = None,
        error: str | None = None,
        at: float | None = None,
    ) -> Op:
        """Record the completion of ``process``'s outstanding op, copying its ``f`` and ``value``."""
        if type not in COMPLETION_TYPES:
            raise ValueError(f"a completion is one of {COMPLETION_TYPES}, not {type!r}")
        with self._lock:
            pending = self._outstanding.get(process)
        if pending is None:
            raise ValueError(f"completion without an invoke for process {process}")
        return self.append(Op(process, type, pending.f, pending.value, _now(at), result, error))

    def mark(self, name: str, *, at: float | None = None) -> Event:
        """Record a scenario marker so checkers can measure from it."""
        event = Event(name, _now(at))
        with self._lock:
            self._events.append(event)
        return event

    # --- reading ---------------------------------------------------------

    @property
    def ops(self) -> list[Op]:
        """A snapshot copy of the ops, in append order."""
        with self._lock:
            return list(self._ops)

    @property
    def events(self) -> list[Event]:
        """A snapshot copy of the scenario markers, in append order."""
        with self._lock:
            return list(self._events)

    def event_time(self, name: str) -> float | None:
        """Monotonic time of the first marker called ``name``, or None."""
        return next((e.time for e in self.events if e.name == name), None)

    def pairs(self) -> list[tuple[Op, Op]]:
        """Completed ops as (invoke, completion), in invoke order.

        Matching is per process, which is enough because a process has at
        most one outstanding op. Ops still outstanding are in ``pending()``.
        """
        open_by_process: dict[int, int] = {}
        matched: list[tuple[Op, Op | None]] = []
        for op in self.ops:
            if op.type == "invoke":
                open_by_process[op.process] = len(matched)
                matched.append((op, None))
            else:
                index = open_by_process.pop(op.process)
                matched[index] = (matched[index][0], op)
        return [(inv, done) for inv, done in matched if done is not None]

    def pending(self) -> list[Op]:
        """Invokes with no completion yet: as uncertain as ``unknown`` ops."""
        with self._lock:
            return sorted(self._outstanding.values(), key=lambda op: op.time)

    # --- persistence -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; every time is relative to ``start`` so runs compare."""
        return {
            "start": 0.0,
            "ops": [op.to_dict(self.start) for op in self.ops],
            "events": [e.to_dict(self.start) for e in self.events],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        """Write the history as JSON (e.g. next to the JUnit report) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Rebuild a saved history (times stay relative, ``start`` is 0)."""
        history = cls(start=float(data.get("start", 0.0)))
        for raw in data["ops"]:
            history.append(
                Op(
                    process=int(raw["process"]),
                    type=raw["type"],
                    f=raw["f"],
                    value=raw["value"],
                    time=float(raw["time"]),
                    result=raw.get("result"),
                    error=raw.get("error"),
                )
            )
        for raw in data.get("events", []):
            history.mark(raw["name"], at=float(raw["time"]))
        return history

    @classmethod
    def load(cls, path: str | Path) -> History:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)


def _now(at: float | None) -> float:
    return time.monotonic() if at is None else at
