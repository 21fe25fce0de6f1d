"""The client: concurrent writes and reads against the API, recorded as a History.

Writers ``POST /products`` with names that are unique across the run (and,
through a per-run prefix, across runs sharing one database), so a checker can
later ask the database which acknowledged writes survived. Readers
``GET /products/{id}`` on ids the writers got acknowledged: every other read is of
the newest, because a fresh write is the one a lagging replica has not replayed yet,
and the others of an older one drawn at random, which every node should hold by
now (a checker judges those: ``check_workload_reads``).

Each op is recorded as an invoke, then exactly one of ok / fail / unknown (see
``classify_response`` and ``classify_exception`` for where the line is drawn).
The run is always bounded, by ``max_ops`` in total and by ``max_seconds``, so
a scenario can never hang on its client: the last request may overrun the
deadline by at most ``request_timeout``.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from chaoslab.history import History, OpF, OpType

# A gateway saying it gave up waiting does not know whether the upstream
# committed, so these are "unknown", not "fail".
AMBIGUOUS_STATUSES: frozenset[int] = frozenset({502, 504})

# How often an idle reader looks for a first acknowledged id.
_FIRST_ACK_POLL = 0.01


def classify_response(f: OpF, status: int, headers: Mapping[str, str], body: bytes | None
                      ) -> tuple[OpType, Any, str | None]:
    """Map an HTTP answer (its status, headers and body, from whichever client) to
    (type, result, error).

    - 2xx: ok; a write's result is the new id, a read's result the name.
    - a read's 404 is an ok read that saw nothing (Jepsen's read of nil): the
      read happened, and a 404 for an acknowledged id is a stale or lost
      read, which ``check_stale_reads`` reports; it is not unavailability.
    - 502/504: unknown (a gateway timed out; the write may have committed).
    - any other 4xx/5xx, including the API's 503: fail, the op did not happen.
    """
    if 200 <= status < 300:
        answer = _json_or_none(body)
        key = "id" if f == "write" else "name"
        if not isinstance(answer, dict) or key not in answer:
            return "ok", None, f"HTTP {status} without {key!r} in body"
        return "ok", answer[key], None
    if f == "read" and status == 404:
        return "ok", None, None
    error = f"HTTP {status}"
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        error += f" (Retry-After: {retry_after})"
    if status in AMBIGUOUS_STATUSES:
        return "unknown", None, error
    return "fail", None, error


def classify_exception(exc: Exception) -> tuple[OpType, str]:
    """Map a client-side error to (type, error).

    A refused or timed-out *connect* means no byte of the request left the
    client, so the op definitely did not happen: fail. Anything after that
    (read timeout, connection reset mid-request) is unknown. The errors are
    urllib3's own, raised as they happened (its pools run with ``retries=False``).
    """
    if isinstance(exc, NewConnectionError):      # a subclass of ConnectTimeoutError: first
        return "fail", "could not connect"
    if isinstance(exc, ConnectTimeoutError):
        return "fail", "connect timeout"
    if isinstance(exc, ReadTimeoutError):
        return "unknown", "timeout"
    return "unknown", f"{type(exc).__name__}: {exc}"[:200]


class Workload:
    """Writer and reader threads that record one shared History.

    Use as a context manager (``with Workload(...) as wl: ...``), or call
    ``start()`` then ``join()``/``stop()``. Scenario code marks its faults on
    ``wl.history`` so that checkers can measure from them.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_ops: int,
        max_seconds: float,
        writers: int = 2,
        readers: int = 1,
        request_timeout: float = 2.0,
        pause_between_ops: float = 0.01,
        name_prefix: str | None = None,
        read_ids: Sequence[int] | None = None,
        history: History | None = None,
    ) -> None:
        if max_ops <= 0 or not 0 < max_seconds < math.inf:
            raise ValueError("max_ops and max_seconds must both be positive: a run is always bounded")
        if writers < 0 or readers < 0 or writers + readers == 0:
            raise ValueError("need at least one writer or reader")
        if readers and not writers and not read_ids:
            raise ValueError("readers without writers need read_ids to read")
        self.base_url = base_url.rstrip("/")
        self._path_prefix = urllib3.util.parse_url(self.base_url).path or ""   # an API served under a path
        self.max_ops = max_ops
        self.max_seconds = max_seconds
        self.writers = writers
        self.readers = readers
        self.request_timeout = request_timeout
        self.pause_between_ops = pause_between_ops
        # A per-run prefix keeps runs apart when they share one database.
        self.name_prefix = f"{uuid.uuid4().hex[:8]}-w" if name_prefix is None else name_prefix
        self.history = history if history is not None else History()
        self._read_ids = list(read_ids) if read_ids else []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ops_claimed = 0
        self._acked_ids: list[int] = []
        self._random = random.Random(self.name_prefix)   # the same reads for the same run prefix
        self._threads: list[threading.Thread] = []
        self._deadline: float | None = None

    # --- lifecycle -------------------------------------------------------

    def start(self) -> Workload:
        if self._threads:
            raise RuntimeError("a Workload runs once; make a new one")
        self._deadline = time.monotonic() + self.max_seconds
        for process in range(self.writers + self.readers):
            target = self._write_loop if process < self.writers else self._read_loop
            role = "writer" if process < self.writers else "reader"
            thread = threading.Thread(target=target, args=(process,), name=f"workload-{role}-{process}", daemon=True)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Ask every thread to stop; in-flight requests end within ``request_timeout``."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads (all within ``timeout`` seconds); True when all are done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return self.done

    @property
    def done(self) -> bool:
        return bool(self._threads) and not any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.join()

    # --- what the run produced -------------------------------------------

    @property
    def acked_ids(self) -> list[int]:
        """Ids of products whose POST was acknowledged, in ack order."""
        with self._lock:
            return list(self._acked_ids)

    def write_name(self, process: int, seq: int) -> str:
        return f"{self.name_prefix}{process}-{seq}"

    # --- the threads -----------------------------------------------------

    def _claim_op(self) -> bool:
        """Take one op from the shared budget, unless stopped, out of time or spent."""
        assert self._deadline is not None
        if self._stop.is_set() or time.monotonic() >= self._deadline:
            return False
        with self._lock:
            if self._ops_claimed >= self.max_ops:
                return False
            self._ops_claimed += 1
            return True

    def _pace(self) -> bool:
        """Wait ``pause_between_ops`` (or until stopped); True to go on."""
        if self.pause_between_ops > 0:
            return not self._stop.wait(self.pause_between_ops)
        return not self._stop.is_set()

    def _write_loop(self, process: int) -> None:
        seq = 0
        with self._connection() as connection:
            while self._claim_op():
                name = self.write_name(process, seq)
                seq += 1
                self.history.invoke(process, "write", name)
                body = {"name": name, "price_cents": 100 + seq}
                op_type, result, error = self._request(connection, "write", "POST", "/products", json=body)
                if op_type == "ok" and isinstance(result, int):
                    with self._lock:
                        self._acked_ids.append(result)
                self.history.complete(process, op_type, result=result, error=error)
                if not self._pace():
                    return

    def _read_loop(self, process: int) -> None:
        turn = 0
        with self._connection() as connection:
            while True:
                product_id = self._next_read_id(turn)
                if product_id is None:
                    # Nothing acknowledged yet: poll for a first ack without using the op budget.
                    if self._stop.wait(_FIRST_ACK_POLL) or self._finished():
                        return
                    continue
                if not self._claim_op():
                    return
                turn += 1
                self.history.invoke(process, "read", product_id)
                op_type, result, error = self._request(connection, "read", "GET", f"/products/{product_id}")
                self.history.complete(process, op_type, result=result, error=error)
                if not self._pace():
                    return

    def _next_read_id(self, turn: int) -> int | None:
        if self._read_ids:
            return self._read_ids[turn % len(self._read_ids)]
        with self._lock:
            if not self._acked_ids:
                return None
            return self._acked_ids[-1] if turn % 2 == 0 else self._random.choice(self._acked_ids)

    def _finished(self) -> bool:
        """Out of time or out of ops: a reader waiting for a first ack gives up too."""
        assert self._deadline is not None
        with self._lock:
            spent = self._ops_claimed >= self.max_ops
        return spent or time.monotonic() >= self._deadline

    def _connection(self) -> urllib3.HTTPConnectionPool:
        """A thread's kept-alive connection to the API. urllib3 rather than requests: a request
        through a requests session cost twice the CPU (its proxy and settings merging), and the
        workload runs through every failover on two cores. No retries: one op, one request."""
        timeout = urllib3.Timeout(connect=self.request_timeout, read=self.request_timeout)
        return urllib3.connection_from_url(self.base_url, maxsize=1, block=False, retries=False, timeout=timeout)

    def _request(
        self, connection: urllib3.HTTPConnectionPool, f: OpF, method: str, path: str, **kwargs: Any
    ) -> tuple[OpType, Any, str | None]:
        try:
            response = connection.request(method, self._path_prefix + path, **kwargs)
        except Exception as exc:  # every failure must still complete the op
            op_type, error = classify_exception(exc)
            return op_type, None, error
        return classify_response(f, response.status, response.headers, response.data)


def _json_or_none(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:      # not JSON, or not UTF-8
        return None
