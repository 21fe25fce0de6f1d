"""Plots for the report (matplotlib, Agg backend: no display needed).

- :func:`latency_plot`: GET latency with and without cache, from the
  ``latency_samples`` attachment ``{"cache_off": [ms...], "cache_warm": [ms...]}``.
- :func:`timeline_plot`: availability during a failover, from the ``timeline``
  attachment ``{"bucket_s", "buckets": [{"t", "ok", "fail", "unknown"}], "events": [{"name", "t"}]}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

SERIES_LABELS = {"cache_off": "sans cache", "cache_warm": "cache chaud"}
OUTCOME_COLORS = {"ok": "#2e7d32", "fail": "#c62828", "unknown": "#f9a825"}
OUTCOME_LABELS = {"ok": "ok", "fail": "échec", "unknown": "inconnu (timeout)"}
EVENT_LABELS = {"fault": "panne", "action": "action de l'opérateur", "promote": "promotion", "switch": "bascule", "new-primary": "nouveau primary",
                "old-primary-back": "retour de l'ancien primary", "rejoined": "ancien primary en replica"}


def _load(source: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    return json.loads(Path(source).read_text(encoding="utf-8"))


def _save(fig: Any, out_png: str | os.PathLike[str]) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def latency_plot(samples_json: str | os.PathLike[str] | Mapping[str, Any], out_png: str | os.PathLike[str]) -> Path:
    """CDF and box plot of GET latencies (ms), without cache and with a warm cache."""
    samples = _load(samples_json)
    series = [
        (SERIES_LABELS.get(key, key), sorted(float(v) for v in values))
        for key, values in samples.items()
        if values
    ]
    if not series:
        raise ValueError("latency_plot: no latency sample")
    fig, (cdf_ax, box_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, values in series:
        n = len(values)
        cdf_ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (n={n})")
    cdf_ax.set_xscale("log")
    cdf_ax.set_xlabel("latence GET /products/{id} (ms, échelle log)")
    cdf_ax.set_ylabel("fraction des requêtes")
    cdf_ax.set_title("Distribution cumulée")
    cdf_ax.grid(True, which="both", alpha=0.3)
    cdf_ax.legend(loc="lower right")
    box_ax.boxplot([v for _, v in series], showfliers=False)
    box_ax.set_xticks(range(1, len(series) + 1), [label for label, _ in series])
    box_ax.set_ylabel("latence (ms)")
    box_ax.set_title("Boîtes (sans valeurs extrêmes)")
    box_ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out_png)


def timeline_plot(timeline_json: str | os.PathLike[str] | Mapping[str, Any], out_png: str | os.PathLike[str], title: str = "") -> Path:
    """Stacked ok/fail/unknown operations per time bucket, with the fault, promote and switch events."""
    timeline = _as_buckets(_load(timeline_json))
    buckets = timeline.get("buckets", [])
    width = float(timeline.get("bucket_s", 0.1))
    times = [float(b["t"]) for b in buckets]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    bottom = [0.0] * len(buckets)
    for outcome in ("ok", "fail", "unknown"):
        heights = [float(b.get(outcome, 0)) for b in buckets]
        ax.bar(times, heights, width=width, bottom=bottom, align="edge",
               color=OUTCOME_COLORS[outcome], label=OUTCOME_LABELS[outcome], linewidth=0)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for index, event in enumerate(timeline.get("events", [])):
        t = float(event["t"])
        ax.axvline(t, color="black", linestyle="--", linewidth=1)
        # Events often come a fraction of a second apart: stagger their labels.
        ax.annotate(EVENT_LABELS.get(event["name"], event["name"]), (t, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -12 - 11 * (index % 3)), textcoords="offset points", fontsize=8)
    ax.set_ylim(0, max(bottom, default=1) * 1.25 or 1)  # headroom for the event labels
    ax.set_xlabel("temps depuis le début de la charge (s)")
    ax.set_ylabel(f"opérations / {width:g} s")
    ax.set_title(title or "Disponibilité pendant la bascule")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out_png)


def _as_buckets(timeline: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept checkers.availability_timeline's columnar layout: the writes are plotted.

    Writes are what a failover interrupts; reads keep going from the replica.
    """
    if "counts" not in timeline:
        return timeline
    writes = timeline["counts"].get("write", {})
    buckets = [{"t": t, **{outcome: writes.get(outcome, [0] * len(timeline["t"]))[i]
                           for outcome in ("ok", "fail", "unknown")}}
               for i, t in enumerate(timeline["t"])]
    events = [{"name": event["name"], "t": event.get("t", event.get("time"))} for event in timeline.get("events", [])]
    return {"bucket_s": timeline["bucket"], "buckets": buckets, "events": events}
