"""`python -m chaoslab watch`: what a student needs to see during the TP, refreshed live.

Each part of the view is read from the component itself (PostgreSQL's own role and
replication views, HAProxy's stats socket, Redis's INFO, the API's /health and /metrics,
the lab's events file) by a probe that turns any failure into "down" with its reason:
the view never dies with the thing it watches.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import lab_events, pg
from .topology import DB_NODES, HAPROXY, REDIS

REFRESH_S = 0.25
SVG_WIDTH = 112   # columns of the saved image: the README's width
PROBE_TIMEOUT_S = 1   # a frozen component costs the view at most this, per probe


@dataclass
class Snapshot:
    at: float
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    haproxy: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    api: dict[str, Any] = field(default_factory=dict)
    events: list[lab_events.LabEvent] = field(default_factory=list)
    node_at: dict[str, str] = field(default_factory=dict)   # "host:port" as HAProxy sees it -> node


def _probe(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return read()
    except Exception as exc:  # the component is down, frozen or refusing: show it, go on
        return {"error": str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__}


def _node(cluster, service: str, state: str) -> dict[str, Any]:
    info: dict[str, Any] = {"state": state}
    if state != "running":
        return info
    with pg.connect(cluster.endpoint(service), cluster.creds, role="superuser") as conn:
        conn.execute(f"SET statement_timeout = '{PROBE_TIMEOUT_S}s'")
        standby = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        info["role"] = "standby" if standby else "primary"
        if standby:
            delay = conn.execute("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp()), "
                                 "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())").fetchone()
            info["replay_delay_s"], info["unreplayed_bytes"] = delay
        else:
            info["standbys"] = pg.standby_lags(conn)
    return info


def _haproxy(cluster) -> dict[str, Any]:
    return {"servers": [(row["pxname"], row["svname"], row["status"], row.get("addr", ""))
                        for row in cluster.haproxy_server_rows()]}


def _redis(cluster) -> dict[str, Any]:
    from .redis_probe import client
    redis = client(cluster.endpoint(REDIS), timeout=PROBE_TIMEOUT_S)
    try:
        stats = redis.info("stats")
        keys = sum(1 for _ in redis.scan_iter(match="product:*", count=1000))
    finally:
        redis.close()
    hits, misses = stats["keyspace_hits"], stats["keyspace_misses"]
    return {"keys": keys, "hits": hits, "misses": misses}


def _api(base_url: str) -> dict[str, Any]:
    health = requests.get(f"{base_url}/health", timeout=PROBE_TIMEOUT_S).json()
    text = requests.get(f"{base_url}/metrics", timeout=PROBE_TIMEOUT_S).text
    requests_by_status: dict[str, float] = {}
    buckets: dict[float, float] = {}
    breakers: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels.get("route") not in ("/metrics", "/health"):
                status = sample.labels.get("status", "")
                requests_by_status[status] = requests_by_status.get(status, 0) + sample.value
            elif sample.name == "http_request_duration_seconds_bucket" and sample.labels.get("route", "").startswith(
                    "/products"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0) + sample.value
            elif sample.name == "breaker_state":
                breakers[sample.labels.get("dependency", "?")] = sample.value
    return {"status": health.get("status"), "requests": requests_by_status, "buckets": buckets,
            "breakers": breakers}


def take(cluster, api_url: str | None) -> Snapshot:
    """Everything the view shows, each part read from its own component."""
    snapshot = Snapshot(at=time.monotonic())
    described = cluster.describe()
    for service in DB_NODES:
        info = described[service]
        state = "paused" if info["paused"] else "running" if info["running"] else "stopped"
        snapshot.nodes[service] = {"state": state, **_probe(lambda: _node(cluster, service, state))}
    snapshot.haproxy = _probe(lambda: _haproxy(cluster)) if described[HAPROXY]["running"] else {"error": "stopped"}
    snapshot.redis = _probe(lambda: _redis(cluster))
    snapshot.api = _probe(lambda: _api(api_url)) if api_url else {"error": "no API in this lab (--no-api)"}
    snapshot.events = lab_events.read_events(cluster.run_dir)[-5:]
    snapshot.node_at = {str(cluster.haproxy_view_of(service)): service for service in DB_NODES}
    return snapshot


# -- the view ----------------------------------------------------------------------------------
_BREAKER = {0: "closed", 1: "open", 2: "half-open"}


def _quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile ``q`` of these counts."""
    total = buckets.get(float("inf"), 0)
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound * 1000
    return None


def _delta(now: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {key: value - before.get(key, 0) for key, value in now.items()}


def render(now: Snapshot, before: Snapshot | None) -> Group:
    nodes = Table(title="PostgreSQL", expand=True)
    for column in ("node", "state", "role", "replication"):
        nodes.add_column(column)
    for service, info in now.nodes.items():
        if "error" in info:
            nodes.add_row(service, info["state"], Text("down", style="red"), info["error"])
            continue
        role = info.get("role", "-")
        if role == "primary":
            standbys = info.get("standbys") or []
            lag = ", ".join(f"{name} {state}: {int(behind or 0)} B behind, replay lag {lag or 0:.3f} s"
                            for name, state, behind, lag in standbys) or "no standby streaming"
        elif role == "standby":
            delay = info.get("replay_delay_s")
            lag = (f"{int(info.get('unreplayed_bytes') or 0)} B received not replayed; last replayed "
                   f"transaction {delay:.1f} s ago" if delay is not None else "nothing replayed yet")
        else:
            lag = ""
        style = {"running": "green", "paused": "yellow", "stopped": "red"}[info["state"]]
        nodes.add_row(service, Text(info["state"], style=style), Text(role, style="bold" if role == "primary" else ""),
                      lag)

    haproxy = Table(title="HAProxy (stats socket)", expand=True)
    for column in ("backend", "server", "points at", "status"):
        haproxy.add_column(column)
    if "error" in now.haproxy:
        haproxy.add_row(HAPROXY, "", "", Text(f"down: {now.haproxy['error']}", style="red"))
    for backend, server, status, address in now.haproxy.get("servers", []):
        haproxy.add_row(backend, server, now.node_at.get(address, address),
                        Text(status, style="green" if status.startswith("UP") else "red"))

    elapsed = now.at - before.at if before else 0
    lines = [Text("Redis: ", style="bold") + (
        Text(f"down ({now.redis['error']})", style="red") if "error" in now.redis else
        Text(f"up, {now.redis['keys']} product:* keys, hit ratio "
             f"{now.redis['hits'] / max(1, now.redis['hits'] + now.redis['misses']):.0%} "
             f"({now.redis['hits']} hits, {now.redis['misses']} misses)"))]
    if "error" in now.api:
        lines.append(Text("API: ", style="bold") + Text(f"down ({now.api['error']})", style="red"))
    else:
        previous = before.api if before and "error" not in before.api else {"requests": {}, "buckets": {}}
        requests_delta = _delta(now.api["requests"], previous["requests"])
        buckets_delta = _delta(now.api["buckets"], previous["buckets"])
        if any(count < 0 for count in requests_delta.values()):   # the API restarted: counters from 0
            requests_delta, buckets_delta = now.api["requests"], now.api["buckets"]
        total = sum(requests_delta.values())
        errors = sum(count for status, count in requests_delta.items() if status.startswith("5"))
        p50, p99 = _quantile(buckets_delta, 0.5), _quantile(buckets_delta, 0.99)
        breakers = ", ".join(f"{name} {_BREAKER.get(int(state), state)}" for name, state in now.api["breakers"].items())
        rate = f"{total / elapsed:.0f} req/s" if elapsed > 0 else "- req/s"
        latency = f"p50 ≤ {p50:g} ms, p99 ≤ {p99:g} ms" if p50 is not None else "no request"
        lines.append(Text("API: ", style="bold") + Text(
            f"{now.api['status']}, {rate}, {errors:.0f} errors (5xx), {latency}; breakers: {breakers or '-'}"))
    lines.append(Text("last events:", style="bold"))
    for event in now.events:
        lines.append(Text(f"  {time.strftime('%H:%M:%S', time.localtime(event.ended))}  {event.kind} {event.detail}"))
    if not now.events:
        lines.append(Text("  none yet (fault, promote, switch)"))
    return Group(nodes, haproxy, *lines, Text("Ctrl-C to quit", style="dim"))


def run_watch(cluster, api_url: str | None, *, seconds: float | None = None, svg: Path | None = None) -> int:
    """The live view until Ctrl-C (or ``seconds``, for a bounded look). ``svg``: the last view
    drawn is also saved there, as an image of the terminal (rich's SVG export)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    before, view = None, None
    try:
        with Live(auto_refresh=False, screen=False) as live:
            while deadline is None or time.monotonic() < deadline:
                now = take(cluster, api_url)
                view = render(now, before)
                live.update(view, refresh=True)
                before = now
                time.sleep(REFRESH_S)   # the view's refresh rate: pacing, not a wait for a state
    except KeyboardInterrupt:
        pass
    if svg is not None and view is not None:
        recorder = Console(record=True, width=SVG_WIDTH, file=io.StringIO())
        recorder.print(view)
        svg.parent.mkdir(parents=True, exist_ok=True)
        recorder.save_svg(str(svg), title="python -m chaoslab watch")
        print(f"\nsaved the last view to {svg}")
    return 0
