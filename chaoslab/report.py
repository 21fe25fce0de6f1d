"""Write the TP's one-page report (in French) from a run's results file.

    python -m chaoslab.report [--results reports/results.json] [--out report.md]
                              [--plots-dir reports/plots]

No figure is typed by hand: every number comes from ``results.json`` (see
:mod:`chaoslab.results`); a figure the run did not measure is written
"non mesuré dans cette exécution". Plots (PNG) go to ``--plots-dir``
(default: ``plots/`` beside the results file) and are linked with relative paths.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from chaoslab import plots
from chaoslab.checkers import MEASURES
from chaoslab.cluster import FAULTS
from chaoslab.network import NETWORK_FAULTS
from chaoslab.redis_ha import SENTINEL_TIMINGS
from chaoslab.grader.rubric import format_points
from chaoslab.results import attachment, find_tests, first_value, load_results, value

MISSING = "non mesuré dans cette exécution"
NOT_RUN = "non exécuté"
# The TP's parts (the bonuses have stacks of their own): the time a student waits for the TP.
TP_MARKERS = {"setup", "replication", "haproxy", "cache", "resilience", "failover"}
BONUS_MARKERS = {"stampede": "Anti cache-stampede", "patroni": "Failover automatique (Patroni)",
                 "sentinel": "HA Redis (Sentinel)"}
MISSING_CELL = "non mesuré"
OUTCOME_FR = {"passed": "réussi", "failed": "échoué", "error": "erreur", "skipped": "ignoré"}

SWITCH_FR = {
    "restart": "édition de haproxy.cfg + redémarrage (méthode du sujet)",
    # A connection opened just before a reload stays with the old worker, which retries the
    # stopped primary (HAProxy's default `retries 3`, 1 s apart, which the brief's config keeps).
    # Shown with clients connecting through HAProxy around `switch --method reload`: those opened
    # before it waited out their 2 s connect timeout, none opened after it did. The API's breaker
    # probe was such a connection in 5 runs of 8, until it stopped waiting on a probe for more
    # than DB_BREAKER_PROBE_SECONDS (service/settings.py).
    "reload": ("édition de haproxy.cfg + rechargement sans coupure : une connexion acceptée avant reste à "
               "l'ancien processus, qui réessaie l'ancienne adresse (`retries` par défaut de HAProxy, que garde "
               "la config du sujet) ; l'API n'attend pas la sienne au-delà de `DB_BREAKER_PROBE_SECONDS` "
               "avant de sonder à nouveau"),
    "runtime_api": "API runtime HAProxy (`set server ... addr`), sans redémarrage",
    "role_aware": "check HAProxy sensible au rôle (aucune action sur HAProxy)",
}

ASCII_ARCHITECTURE = """\
        ┌────────────┐
        │    API     │
        └─────┬──────┘
              │ DB (unique)
        ┌─────▼──────┐
        │  HAProxy   │
        └───┬─────┬──┘
            │     │
   ┌────────▼──┐ ┌▼──────────┐
   │ DB Primary│ │ DB Replica│
   └───────────┘ └───────────┘

        ┌────────────┐
        │   Redis    │
        └────────────┘"""

MERMAID_ARCHITECTURE = """\
flowchart LR
    client([clients / charge de test]) --> api[API Starlette]
    api -- "écritures (DSN unique)" --> haproxy[HAProxy]
    haproxy -- "backend pg_primary" --> primary[(db-primary)]
    haproxy -. "après promotion + bascule" .-> replica
    api -- "lectures" --> replica[(db-replica)]
    primary == "réplication en streaming (WAL)" ==> replica
    api -- "cache-aside product:{id}" --> redis[(Redis)]"""


# --- formatting ------------------------------------------------------------


def _as_number(raw: Any) -> float | int | None:
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, (int, float)):
        return raw
    try:
        text = str(raw).strip().replace(",", ".")
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    except ValueError:
        return None


def num(raw: Any) -> str | None:
    """A figure in French notation (decimal comma), or ``None`` if missing."""
    if raw is None or raw == "":
        return None
    number = _as_number(raw)
    if number is None:
        return str(raw)
    if isinstance(number, int):
        return str(number)
    magnitude = abs(number)
    digits = 0 if magnitude >= 1000 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    text = f"{number:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace(".", ",")


def fig(raw: Any, unit: str = "", missing: str = MISSING) -> str:
    """``12,3 ms``, or the missing phrase."""
    text = num(raw)
    if text is None:
        return missing
    return f"{text} {unit}".strip()


def cell(raw: Any, unit: str = "") -> str:
    return fig(raw, unit, missing=MISSING_CELL)


def _numbers(tests: Iterable[Mapping[str, Any]], name: str) -> list[float]:
    found = []
    for test in tests:
        number = _as_number(value(test, name))
        if number is not None:
            found.append(float(number))
    return found


def spread(values: Sequence[float], unit: str) -> str:
    """One figure, or ``a à b unit sur n mesures``, or the missing phrase."""
    if not values:
        return MISSING
    low, high = min(values), max(values)
    if len(values) == 1 or low == high:
        return fig(low, unit)
    return f"{num(low)} à {num(high)} {unit} sur {len(values)} mesures".replace("  ", " ")


def ratio(numerator: Any, denominator: Any) -> str | None:
    top, bottom = _as_number(numerator), _as_number(denominator)
    if top is None or bottom is None or bottom == 0:
        return None
    return num(top / bottom)


def label(test: Mapping[str, Any]) -> str:
    """The test's own name with its parameters, unique in a run (``primary_failover[kill-reload]``):
    parameter ids alone repeat across tests (``async``, ``sync``)."""
    name = test.get("name") or test.get("nodeid", "?").split("::")[-1]
    return name.removeprefix("test_")


def outcome_fr(test: Mapping[str, Any]) -> str:
    return OUTCOME_FR.get(test.get("outcome", ""), str(test.get("outcome")))


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "test"


# --- plots -----------------------------------------------------------------


@dataclass
class _Context:
    results: Mapping[str, Any]
    out_dir: Path
    plots_dir: Path
    search_dirs: list[Path]
    grade: Mapping[str, Any] | None = None      # the grader's grade.json, if the run was graded
    notes: list[str] = field(default_factory=list)

    @property
    def run(self) -> Mapping[str, Any]:
        return self.results.get("run", {})

    def resolve(self, stored: str) -> Path | None:
        path = Path(stored)
        if path.is_absolute():
            return path if path.exists() else None
        for base in self.search_dirs:
            if (base / path).exists():
                return base / path
        return None

    def link(self, png: Path) -> str:
        return Path(os.path.relpath(png, self.out_dir)).as_posix()

    def plot(self, kind: str, stored: str | None, png_name: str, **kwargs: Any) -> str | None:
        """Make a plot from an attachment; return its link, or ``None`` (with a note)."""
        if stored is None:
            return None
        source = self.resolve(stored)
        if source is None:
            self.notes.append(f"données de courbe introuvables : `{stored}`")
            return None
        try:
            maker = plots.latency_plot if kind == "latency" else plots.timeline_plot
            png = maker(source, self.plots_dir / png_name, **kwargs)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            self.notes.append(f"courbe `{png_name}` non produite ({exc})")
            return None
        return self.link(png)


# --- sections --------------------------------------------------------------


def _version(results: Mapping[str, Any], component: str) -> str:
    """From the run info (``versions`` or ``<component>_version``), else a ``<component>_version`` figure."""
    run = results.get("run", {})
    found = (run.get("versions") or {}).get(component) or run.get(f"{component}_version")
    if component == "python":
        found = found or run.get("python")
    if not found:
        found = next((v for t in results.get("tests", []) if (v := value(t, f"{component}_version"))), None)
    return str(found) if found else MISSING


def _scenarios(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in results.get("tests", []) if t.get("markers")]


def label_of(name: str) -> str:
    """A figure's French name, from its one definition (chaoslab.checkers.MEASURES)."""
    return MEASURES[name].label


def heading(name: str) -> str:
    """A figure's French name at the head of a table column or row: ``RTO``, ``Reprise des écritures``."""
    text = label_of(name)
    return text[:1].upper() + text[1:]


def measures(count: int) -> str:
    return f"{count} mesure" + ("s" if count > 1 else "")


def legend(names: Iterable[str]) -> str:
    """The definitions of the figures a table shows, one line each."""
    return "\n".join(f"- **{MEASURES[name].label}** : {MEASURES[name].definition}." for name in names)


def median_of(tests: Iterable[Mapping[str, Any]], name: str) -> float | None:
    values = _numbers(tests, name)
    return statistics.median(values) if values else None


def change(before: Any, after: Any) -> str:
    """``-32 %``: how much a figure went down (or up) from ``before`` to ``after``."""
    top, bottom = _as_number(after), _as_number(before)
    if top is None or bottom is None or bottom == 0:
        return MISSING_CELL
    return f"{(top - bottom) / bottom * 100:+.0f} %".replace("-", "−")


def verdict_of(tests: Sequence[Mapping[str, Any]]) -> str:
    """réussi / échoué for a group of tests that prove one claim, or the missing phrase."""
    if not tests:
        return MISSING
    failed = [t for t in tests if t.get("outcome") != "passed"]
    return "réussi" if not failed else f"échoué ({', '.join(f'`{label(t)}`' for t in failed)})"


def section_header(ctx: _Context) -> str:
    run, results = ctx.run, ctx.results
    tests = results.get("tests", [])
    counts = {k: sum(1 for t in tests if t.get("outcome") == k) for k in OUTCOME_FR}
    slowest = sorted(_scenarios(results), key=lambda t: t.get("duration_total_s", 0), reverse=True)[:3]
    slow_text = " ; ".join(f"`{t['nodeid']}` ({fig(t.get('duration_total_s'), 's')})" for t in slowest)
    tp_tests = [t for t in tests if TP_MARKERS & set(t.get("markers", []))]
    tp_seconds = sum(t.get("duration_total_s", 0) for t in tp_tests) if tp_tests else None
    rows = [
        ("Date de l'exécution", run.get("started_at") or MISSING),
        ("Backend", run.get("backend") or MISSING),
        ("PostgreSQL", _version(results, "postgresql")),
        ("Redis", _version(results, "redis")),
        ("HAProxy", _version(results, "haproxy")),
        ("Python", _version(results, "python")),
        ("Durée totale", fig(run.get("wall_seconds"), "s")),
        ("Durée des scénarios des parties A à F", fig(tp_seconds, "s")),
        (
            "Tests",
            f"{len(tests)} (réussis : {counts['passed']}, échoués : {counts['failed']}, "
            f"en erreur : {counts['error']}, ignorés : {counts['skipped']})",
        ),
        ("Note (barème du sujet, par le correcteur)", _grade_cell(ctx.grade)),
        ("Scénarios les plus lents", slow_text or MISSING),
    ]
    return "\n".join(
        [
            "# Mini-rapport — TP réplication PostgreSQL, cache Redis et haute disponibilité",
            "",
            "_Généré par `python -m chaoslab.report` depuis le fichier de résultats de l'exécution : "
            "aucun chiffre n'est saisi à la main, chaque chiffre a une seule définition (donnée sous son "
            "tableau) et n'est comparé qu'à des chiffres de même définition._",
            "",
            md_table(("Exécution", ""), rows),
        ]
    )


def section_architecture() -> str:
    return "\n".join(
        [
            "## 1. Architecture",
            "",
            "```mermaid",
            MERMAID_ARCHITECTURE,
            "```",
            "",
            "Schéma du sujet :",
            "",
            "```",
            ASCII_ARCHITECTURE,
            "```",
            "",
            "Sur le backend local, les connexions de l'API (vers Redis, HAProxy et la replica), la réplication et, "
            "en configuration role-aware, celles de HAProxy vers les nœuds passent par le proxy de pannes du laboratoire (`chaoslab/faultproxy`, section 5 bis) : les latences "
            "mesurées ici incluent ce saut supplémentaire (son coût est mesuré dans `docs/network.md`).",
        ]
    )


def section_read_write(ctx: _Context) -> str:
    results = ctx.results
    delays = _numbers(find_tests(results, "replication", "replication_delay_ms"), "replication_delay_ms")
    haproxy = find_tests(results, "haproxy")
    mark_down = _numbers(haproxy, "haproxy_mark_down_ms")
    reroute = _numbers(haproxy, "haproxy_reroute_ms")
    replica_tests = find_tests(results, "resilience", "replica_policy")
    lines = [
        "## 2. Stratégie lecture/écriture",
        "",
        "- **Écritures** : l'API n'a qu'un DSN, celui de HAProxy, qui envoie vers le primary ; "
        "l'API ignore quel nœud est primaire, donc une bascule ne change pas son code.",
        "- **Lectures** : directement sur la replica (réplication asynchrone en streaming). "
        f"{heading('replication_delay_ms')} : {spread(delays, 'ms')}.",
        f"- **HAProxy** (config sensible au rôle) : {label_of('haproxy_mark_down_ms')} {spread(mark_down, 'ms')} ; "
        f"{label_of('haproxy_reroute_ms')} {spread(reroute, 'ms')}.",
    ]
    if replica_tests:
        policies = ", ".join(
            f"`{value(t, 'replica_policy') or label(t)}` → {value(t, 'status_codes') or MISSING_CELL} ({outcome_fr(t)})"
            for t in replica_tests
        )
        lines.append(f"- **Replica en panne** (E2), codes HTTP observés par politique : {policies}.")
    else:
        lines.append(f"- **Replica en panne** (E2) : {MISSING}.")
    lines += ["", legend(("replication_delay_ms", "haproxy_mark_down_ms", "haproxy_reroute_ms"))]
    return "\n".join(lines)


def _ttl_sentence(ttl: Any) -> str:
    seconds = _as_number(ttl)
    if seconds is None:
        return f"- **TTL** : {MISSING}."
    where = "dans" if 30 <= seconds <= 120 else "**hors** de"
    return (f"- **TTL : {fig(seconds, 's')}**, lu dans Redis, {where} la fourchette 30–120 s du sujet. Le TTL borne "
            "la durée de vie d'une valeur obsolète quand une invalidation est manquée (course décrite "
            "ci-dessous) ; plus court, les produits consultés souvent retourneraient trop souvent en base.")


def _guard_sentence(results: Mapping[str, Any]) -> str:
    race = {str(value(t, "race_guard")): t for t in find_tests(results, None, "race_stale_window_ms")}
    closing = ("chaque écriture enregistre la position WAL (LSN) de son commit comme marqueur de la clé, et un miss "
               "ne remplit le cache que depuis une replica qui a rejoué ce LSN (sinon il répond sans mettre en cache)")
    guarded = race.get("on")
    if guarded is None:
        return f"L'API a une garde contre elle ({closing}), non vérifiée dans cette exécution."
    if guarded.get("outcome") != "passed":
        return f"L'API a une garde contre elle ({closing}), mais son scénario a échoué dans cette exécution."
    return f"L'API la ferme, ce que cette exécution vérifie (section 4) : {closing}."


def section_cache(ctx: _Context) -> str:
    results = ctx.results
    ttl = first_value(find_tests(results, "cache", "cache_ttl_s"), "cache_ttl_s")
    perf = find_tests(results, "cache", "get_p50_ms_cache_off") or find_tests(results, "cache", "get_p50_ms_cache_warm")
    test = perf[0] if perf else {}
    rows = []
    for measure_name, suffix, unit in (("get_p50_ms", "get_p50_ms", "ms"), ("get_p95_ms", "get_p95_ms", "ms"),
                                       ("db_reads", "db_reads", "")):
        off, warm = value(test, f"{suffix}_cache_off"), value(test, f"{suffix}_cache_warm")
        rows.append((heading(measure_name), cell(off, unit), cell(warm, unit), change(off, warm)))
    invalidation = find_tests(results, "cache")
    invalidation = [t for t in invalidation if "invalidates" in str(t.get("name"))]
    lines = [
        "## 3. Stratégie de cache",
        "",
        "- **Cache-aside** sur `GET /products/{id}`, clé `product:{id}` : lecture Redis ; "
        "sur un miss, lecture de la replica puis mise en cache.",
        _ttl_sentence(ttl),
        f"- **Invalidation** : `PUT /products/{{id}}` met à jour le primary puis supprime la clé "
        f"(clé absente de Redis juste après le `PUT` : {verdict_of(invalidation)}).",
        "- **Course de remplissage** : juste après la suppression, un miss lit la replica qui n'a pas "
        "encore rejoué l'écriture et remet l'**ancienne** valeur en cache pour tout un TTL. "
        + _guard_sentence(results),
        "",
        f"Mesures avant/après cache ({cell(value(test, 'requests_measured'))} requêtes mesurées par série) :",
        "",
        md_table(("Indicateur", "Sans cache", "Cache chaud", "Variation"), rows),
        "",
        legend(("get_p50_ms", "get_p95_ms", "db_reads", "cache_ttl_s")),
    ]
    link = ctx.plot("latency", attachment(test, "latency_samples") if test else None, "latency.png")
    if link:
        lines += ["", f"![Latence GET avec et sans cache]({link})"]
    return "\n".join(lines)


def section_stale(ctx: _Context) -> str:
    results = ctx.results
    d4 = find_tests(results, "cache", "stale_window_ms")   # D4 itself: section 5 bis has the network's own
    race = find_tests(results, None, "race_stale_window_ms")
    lines = ["## 4. Fenêtres de lecture obsolète", ""]
    if d4:
        for test in d4:
            lines.append(
                f"- D4 (modifier puis relire aussitôt), replica retardée de {fig(value(test, 'apply_delay_ms'), 'ms')} : "
                f"ancienne valeur lue pendant {fig(value(test, 'stale_window_ms'), 'ms')} ({outcome_fr(test)})."
            )
    else:
        lines.append(f"- D4 (modifier puis relire aussitôt) : {MISSING}.")
    if race:
        rows = [
            (
                str(value(t, "race_guard") or label(t)),
                cell(value(t, "race_stale_window_ms"), "ms"),
                cell(value(t, "ttl_setting_s"), "s"),
                outcome_fr(t),
            )
            for t in race
        ]
        lines += ["", "Course de remplissage du cache (garde LSN désactivée / activée, TTL réglé court pour "
                      "le scénario) :", ""]
        lines.append(md_table(("Garde LSN", heading("race_stale_window_ms"), "TTL réglé", "Verdict"),
                              rows))
    else:
        lines.append(f"- Course de remplissage du cache : {MISSING}.")
    lines += ["", legend(("stale_window_ms", "race_stale_window_ms"))]
    return "\n".join(lines)


def section_resilience(ctx: _Context) -> str:
    results = ctx.results
    redis_tests = find_tests(results, "resilience", "p50_ms_breaker_open")
    writes = find_tests(results, "resilience", "put_during_outage_ms")
    late_start = [t for t in find_tests(results, "resilience") if "started_while_redis_is_down" in str(t.get("name"))]
    replica_tests = find_tests(results, "resilience", "replica_policy")
    lines = ["## 5. Résilience (pannes contrôlées)", ""]
    if redis_tests:
        rows = [
            (
                f"`{label(t)}`",
                f"{cell(value(t, 'failed_reads'))} / {cell(value(t, 'reads_total'))}",
                cell(value(t, "p50_ms_breaker_open"), "ms"),
                cell(value(t, "p50_ms_no_cache"), "ms"),
                outcome_fr(t),
            )
            for t in redis_tests
        ]
        lines += ["Panne Redis (E1) sous charge de lectures : l'API doit continuer sans cache.", ""]
        lines.append(md_table(("Panne", "Lectures en échec / total", heading("p50_ms_breaker_open"),
                               heading("p50_ms_no_cache"), "Verdict"), rows))
        lines += ["", legend(("failed_reads", "p50_ms_breaker_open", "p50_ms_no_cache"))]
    else:
        lines.append(f"Panne Redis (E1) : {MISSING}.")
    lines.append("")
    if writes:
        rows = [(f"`{label(t)}`", cell(value(t, "put_during_outage_ms"), "ms"), outcome_fr(t)) for t in writes]
        lines += ["Écriture pendant la panne Redis (Redis revient avec l'ancienne valeur en mémoire ou dans son "
                  "instantané ; aucun `GET` ne doit la resservir) :", "",
                  md_table(("Panne", "`PUT` pendant la panne", "Verdict"), rows), ""]
    else:
        lines += [f"Écriture pendant la panne Redis : {MISSING}.", ""]
    lines += [f"API démarrée pendant que Redis est arrêté, puis Redis démarré : {verdict_of(late_start)}.", ""]
    if replica_tests:
        rows = [
            (f"`{value(t, 'replica_policy') or label(t)}`", str(value(t, "status_codes") or MISSING_CELL),
             cell(value(t, "first_fallback_ms"), "ms"), outcome_fr(t))
            for t in replica_tests
        ]
        lines += ["Panne de la replica (E2) :", "",
                  md_table(("Politique", "Codes HTTP (code:nombre)", heading("first_fallback_ms"), "Verdict"), rows),
                  "", legend(("first_fallback_ms",))]
    else:
        lines.append(f"Panne de la replica (E2) : {MISSING}.")
    return "\n".join(lines)


# -- failover --------------------------------------------------------------------------------------
# By hand, the RTO splits into the operator's detection, their action and the system's own
# recovery; Patroni has no operator, so its split is its election and the same recovery.
MANUAL_FIGURES = ("detection_s", "operator_action_s", "write_recovery_s", "rto_s", "longest_write_outage_s")
AUTOMATIC_FIGURES = ("time_to_new_primary_s", "write_recovery_s", "rto_s", "longest_write_outage_s")
WRITE_COUNTS = ("acked_writes", "lost_writes", "unknown_writes")
NOT_APPLICABLE = "sans objet"


def section_network(ctx: _Context) -> str:
    """Network faults on the API's link to Redis, the replication link and HAProxy's link to the
    primary, as measured."""
    reads = find_tests(ctx.results, "network", "p99_ms_breaker_open")
    writes = find_tests(ctx.results, "network", "put_during_outage_ms")
    replication = [t for t in find_tests(ctx.results, "network") if any(
        value(t, name) is not None for name in ("replay_lag_ms_max", "put_p50_ms_sync", "wal_retained_bytes",
                                                "stalled_write_answer_s"))]
    split = find_tests(ctx.results, "network", "writes_on_old_primary")
    etcd = [t for t in find_tests(ctx.results, "network") if value(t, "demoted_after_s") is not None
            or value(t, "writes_acked_without_etcd") is not None]
    sentinel_cut = find_tests(ctx.results, "network", "old_master_acked_after_promotion")
    sentinel_slow = find_tests(ctx.results, "network", "sentinel_link_ping_ms")
    lines = ["## 5 bis. Pannes réseau (liens API → Redis, réplication, HAProxy → primary, Patroni → etcd, "
             "Sentinels → Redis)", ""]
    router = find_tests(ctx.results, "network", "writes_back_after_heal_s")
    if not any((reads, writes, replication, split, etcd, router, sentinel_cut, sentinel_slow)):
        lines.append(f"Pannes réseau : {MISSING}.")
        return "\n".join(lines)
    lines += ["Le lien de l'API vers Redis passe par le proxy de pannes du laboratoire (API de Toxiproxy) ; "
              "Redis lui-même reste joignable par le banc de test, qui lit ses compteurs. `slow` : "
              f"{NETWORK_FAULTS['latency'].description}, trois fois le délai Redis de l'API ; `blackhole` : "
              f"{NETWORK_FAULTS['blackhole'].description} ; `down` : {NETWORK_FAULTS['down'].description}.", ""]
    if reads:
        names = ("p50_ms_breaker_open", "p50_ms_no_cache", "p99_ms_breaker_open", "p99_ms_no_cache",
                 "redis_gets_while_open", "reads_while_open", "cache_back_after_s")
        rows = [(f"`{label(t)}`", f"{cell(value(t, 'failed_reads'))} / {cell(value(t, 'reads_total'))}",
                 *(cell(value(t, name), MEASURES[name].unit) for name in names), outcome_fr(t)) for t in reads]
        lines.append(md_table(("Panne du lien", "Lectures en échec / total", *(heading(n) for n in names),
                               "Verdict"), rows))
        lines += ["", legend(("failed_reads", *names))]
    if writes:
        rows = [(f"`{label(t)}`", cell(value(t, "put_during_outage_ms"), "ms"), outcome_fr(t)) for t in writes]
        lines += ["", "Écriture pendant la partition (Redis garde l'ancienne valeur, lue dans Redis ; aucun `GET` ne "
                  "doit la resservir après la fin de la panne) :", "",
                  md_table(("Scénario", "`PUT` pendant la panne", "Verdict"), rows)]
    if replication:
        names = ("replication_latency_ms", "replication_kbps", "stale_window_ms", "replay_lag_ms_max",
                 "replay_lag_bytes_max",
                 "put_p50_ms_sync", "put_p50_ms_sync_slow_link", "wal_retained_bytes", "writes_behind_at_heal",
                 "catch_up_s", "stalled_write_answer_s")
        rows = []
        for test in replication:
            figures = [f"{heading(n)} : {cell(value(test, n), MEASURES[n].unit)}" for n in names
                       if value(test, n) is not None]
            status = value(test, "stalled_write_status")
            if status is not None:
                figures.append(f"réponse HTTP {status}")
            rows.append((f"`{label(test)}`", " ; ".join(figures), outcome_fr(test)))
        lines += ["", "Lien de réplication (la replica reçoit le WAL par le proxy de pannes) :", "",
                  md_table(("Scénario", "Mesures", "Verdict"), rows), "", legend(names)]
    if split:
        names = ("haproxy_marked_down_s", "writes_on_old_primary", "writes_on_new_primary")
        rows = [(f"`{label(t)}`", *(cell(value(t, n), MEASURES[n].unit) for n in names), outcome_fr(t)) for t in split]
        lines += ["", "Primary coupé de HAProxy mais vivant (configuration role-aware), puis replica promue ; un "
                  "client qui joint encore l'ancien primary en direct continue d'écrire. Sans clôture (*fencing*), "
                  "deux primaries acceptent des écritures (split brain) ; avec l'ancien primary arrêté ou passé en "
                  "lecture seule avant la promotion, il n'en accepte aucune :", "",
                  md_table(("Scénario (clôture)", *(heading(n) for n in names), "Verdict"), rows), "", legend(names)]
    if etcd:
        names = ("demoted_after_s", "no_primary_s", "time_to_new_primary_s", "longest_write_outage_s",
                 "writes_acked_without_etcd", "lost_writes")
        # The two scenarios record different figures: a cell one of them has no use for says so.
        rows = [(f"`{label(t)}`", str(value(t, "failsafe_mode") or MISSING_CELL),
                 *(NOT_APPLICABLE if value(t, n) is None and t.get("outcome") == "passed"
                   else cell(value(t, n), MEASURES[n].unit) for n in names), outcome_fr(t)) for t in etcd]
        lines += ["", "Patroni coupé d'etcd (bonus) : le leader seul (il doit se rétrograder avant l'expiration de sa "
                  "clé, sans jamais laisser deux nœuds accepter des écritures), puis tous les nœuds (sans "
                  "`failsafe_mode`, le leader passe en lecture seule ; avec, il reste primary tant qu'il joint "
                  "l'API REST de chaque membre) :", "",
                  md_table(("Scénario", "`failsafe_mode`", *(heading(n) for n in names), "Verdict"), rows), "",
                  legend(names)]
    for test in router:
        # What the scenario checks is said only when it passed; else its verdict speaks.
        checked = ("aucune écriture n'est acquittée tant que dure la partition, sans que Patroni ne bascule (il ne "
                   "voit rien d'anormal)" if test.get("outcome") == "passed"
                   else f"le scénario n'a pas réussi ({outcome_fr(test)}) : voir son message")
        lines += ["", f"HAProxy coupé du leader Patroni (`{label(test)}`, {outcome_fr(test)}) : le leader est marqué "
                      f"DOWN en {cell(value(test, 'haproxy_marked_down_s'), 's')} ; {checked} ; écritures de retour "
                      f"{cell(value(test, 'writes_back_after_heal_s'), 's')} après la fin de la partition, "
                      f"{cell(value(test, 'lost_writes'))} écriture(s) acquittée(s) perdue(s).",
                  "", legend(("haproxy_marked_down_s", "writes_back_after_heal_s"))]
    if sentinel_cut:
        names = ("promoted_after_cut_s", "old_master_acked_after_promotion", "old_master_refused_writes",
                 "direct_writes_lost")
        rows = [(f"`{value(t, 'guard') or label(t)}`", *(cell(value(t, n), MEASURES[n].unit) for n in names),
                 outcome_fr(t)) for t in sentinel_cut]
        # What the scenario checks, not what it found: the verdict column says whether it held.
        lines += ["", "Maître Redis coupé des trois Sentinels mais vivant (bonus Sentinel) : elles promeuvent la "
                  "replica, et un client qui joint encore l'ancien maître en direct continue d'y écrire. Le scénario "
                  "vérifie que, sans garde, l'ancien maître acquitte ces écritures et que la resynchronisation les "
                  "efface quand il redevient replica ; et qu'avec `min-replicas-to-write 1` "
                  "(`min-replicas-max-lag 1`), il les refuse dès que sa replica l'a quitté :", "",
                  md_table(("Garde", *(heading(n) for n in names), "Verdict"), rows), "", legend(names)]
    if sentinel_slow:
        names = ("sentinel_link_ping_ms", "master_ping_ms_max", "spurious_failover_after_s")
        down_after = SENTINEL_TIMINGS["down_after_ms"]
        # A case that passed without a failover had none to time: the cell says so.
        rows = [(f"`{t.get('param_id') or label(t)}`", *(NOT_APPLICABLE if value(t, n) is None and t.get("outcome") == "passed"
                                    else cell(value(t, n), MEASURES[n].unit) for n in names), outcome_fr(t))
                for t in sentinel_slow]
        lines += ["", "Latence sur les liens des trois Sentinels vers un maître Redis sain (bonus Sentinel ; ses "
                  "clients et sa replica l'entendent sans délai). Le scénario vérifie qu'en dessous de "
                  f"`down-after-milliseconds` ({down_after} ms) rien ne bascule pendant dix fois ce délai, et "
                  "qu'au-dessus les Sentinels basculent un maître qu'un client joint en direct en moins de sa moitié "
                  "(un faux positif) :", "",
                  md_table(("Cas", *(heading(n) for n in names), "Verdict"), rows), "", legend(names)]
    return "\n".join(lines)


def _of_kind(results: Mapping[str, Any], *kinds: str) -> list[Mapping[str, Any]]:
    return [t for t in results.get("tests", []) if value(t, "failover_kind") in kinds]


def _unmeasured_failures(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Failover tests that did not pass and recorded no kind: they show, with no figure."""
    return [t for marker in ("failover", "patroni") for t in find_tests(results, marker)
            if t.get("outcome") != "passed" and value(t, "failover_kind") is None]


# What a failover of each kind cannot have: a switchover is no fault (no RTO, no time from a
# fault); after a network fault that writes survive, the outage starts later (no RTO).
NO_FIGURE_BY_KIND = {"planned": ("rto_s", "time_to_new_primary_s"), "network": ("rto_s",)}


def _failover_row(ctx: _Context, test: Mapping[str, Any], first_cells: Sequence[str],
                  names: Sequence[str]) -> tuple[str, ...]:
    link = ctx.plot("timeline", attachment(test, "timeline"), f"timeline-{_slug(label(test))}.png",
                    title=f"Bascule {label(test)}")
    no_figure = NO_FIGURE_BY_KIND.get(str(value(test, "failover_kind")), ())
    figures = [NOT_APPLICABLE if name in no_figure else cell(value(test, name), "s") for name in names]
    return (f"`{label(test)}`", *first_cells, *figures, *(cell(value(test, name)) for name in WRITE_COUNTS),
            outcome_fr(test), f"[png]({link})" if link else MISSING_CELL)


def _failover_header(first: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    return ("Scénario", *first, *(heading(name) for name in names),
            *(heading(name) for name in WRITE_COUNTS), "Verdict", "Chronologie")


def _soundness(tests: Sequence[Mapping[str, Any]]) -> str:
    """The checks every failover passes, summed over a table's scenarios."""
    def total(name: str) -> str:
        return num(sum(_numbers(tests, name))) or "0"
    return (f"Sur ces scénarios : {total('failed_but_present_writes')} écriture(s) refusée(s) mais présente(s) ; "
            f"{total('reads_judged')} lectures jugées, {total('stale_reads')} obsolète(s), "
            f"{total('failed_reads')} en échec.")


def section_failover(ctx: _Context) -> str:
    results = ctx.results
    manual = _of_kind(results, "manual")
    automatic = _of_kind(results, "automatic", "planned", "network")
    lines = ["## 6. Haute disponibilité : bascule du primary", ""]
    if manual:
        lines += ["Bascule à la main (partie F : panne, promotion, bascule HAProxy, écritures par l'API inchangée) :", ""]
        lines.append(md_table(_failover_header(("Panne", "Bascule", "Synchrone"), MANUAL_FIGURES),
                              [_failover_row(ctx, t, (str(value(t, "fault")), str(value(t, "switch")),
                                                      str(value(t, "synchronous"))), MANUAL_FIGURES)
                               for t in manual]))
        faults = sorted({str(value(t, "fault")) for t in manual})
        lines += ["", f"Le {label_of('rto_s')} s'y décompose en « {label_of('detection_s')} » "
                      f"({fig(median_of(manual, 'detection_s'), 's')} en médiane), « {label_of('operator_action_s')} » "
                      f"({fig(median_of(manual, 'operator_action_s'), 's')}) et « {label_of('write_recovery_s')} » "
                      f"({fig(median_of(manual, 'write_recovery_s'), 's')}). Une écriture envoyée juste après la "
                      f"panne est refusée en {spread(_numbers(manual, 'write_refused_ms'), 'ms')} "
                      f"(« {label_of('write_refused_ms')} »).",
                  "", _soundness(manual) + " Pannes : "
                  + " ; ".join(f"`{key}` : {FAULTS.get(key, MISSING_CELL)}" for key in faults) + "."]
    else:
        lines.append(f"Bascule à la main (partie F) : {MISSING}.")
    lines.append("")
    if automatic:
        lines += ["Failover automatique (bonus Patroni : personne ne promeut ni ne touche HAProxy) :", ""]
        lines.append(md_table(_failover_header(("Panne", "Synchrone"), AUTOMATIC_FIGURES),
                              [_failover_row(ctx, t, (str(value(t, "fault")), str(value(t, "synchronous"))),
                                             AUTOMATIC_FIGURES) for t in automatic]))
        lines += ["", _soundness(automatic)]
    else:
        lines.append(f"Failover automatique (Patroni) : {MISSING}.")
    for test in find_tests(results, None, "rewound_writes"):
        lines += ["", f"Retour de l'ancien primary par pg_rewind (`{label(test)}`, {outcome_fr(test)}) : "
                      f"{cell(value(test, 'rewound_writes'))} écriture(s) {label_of('rewound_writes')}. "
                      "Elles ne comptent pas parmi les écritures perdues des bascules ci-dessus."]
    unmeasured = _unmeasured_failures(results)
    if unmeasured:
        lines += ["", "Scénarios de bascule en échec sans mesure : "
                      + " ; ".join(f"`{label(t)}` ({outcome_fr(t)})" for t in unmeasured) + "."]
    lines += ["", legend((*MANUAL_FIGURES, "time_to_new_primary_s", "write_refused_ms", *WRITE_COUNTS, "failed_but_present_writes", "stale_reads",
                          "failed_reads", "rewound_writes"))]
    return "\n".join(lines)


def section_manual_auto(ctx: _Context) -> str:
    results = ctx.results
    manual = _of_kind(results, "manual")
    automatic = _of_kind(results, "automatic")
    mark_down = _numbers(find_tests(results, "haproxy"), "haproxy_mark_down_ms")
    lines = [
        "## 7. Manuel ou automatique ?",
        "",
        "- **Automatique** : la réplication en streaming ; la détection de panne par les checks HAProxy "
        f"({spread(mark_down, 'ms')}) ; l'expiration du cache (TTL) ; le passage sans cache quand Redis "
        f"tombe (délais courts + disjoncteur ; scénarios E1 : {verdict_of(find_tests(results, 'resilience', 'p50_ms_breaker_open'))}).",
        "- **Manuel** (sujet) : la promotion (`pg_ctl promote`), l'édition de `haproxy.cfg` et le "
        "redémarrage de HAProxy, la remise en service de l'ancien primary comme replica. Ici c'est le "
        "harnais qui agit, aussitôt la panne constatée : un humain ajouterait son temps de réaction à "
        f"« {label_of('detection_s')} ».",
    ]
    by_switch: dict[str, list[Mapping[str, Any]]] = {}
    for test in manual:
        by_switch.setdefault(str(value(test, "switch")), []).append(test)
    if by_switch:
        def order(item: tuple[str, list]) -> float:
            found = median_of(item[1], "write_recovery_s")
            return found if found is not None else float("inf")
        rows = [(f"`{switch}`", SWITCH_FR.get(switch, MISSING_CELL), fig(median_of(tests, "write_recovery_s"), "s"),
                 fig(median_of(tests, "rto_s"), "s"), str(len(tests)))
                for switch, tests in sorted(by_switch.items(), key=order)]
        lines += ["", "Bascule à la main, par méthode (médianes, partie F) :", "",
                  md_table(("Méthode", "Ce qu'elle fait", heading('write_recovery_s'),
                            label_of("rto_s"), "Mesures"), rows)]
    lines += ["", f"{label_of('rto_s')} médian, même définition des deux côtés : bascule à la main "
                  f"{fig(median_of(manual, 'rto_s'), 's')} ({measures(len(manual))}), failover Patroni après une "
                  f"panne {fig(median_of(automatic, 'rto_s'), 's')} ({measures(len(automatic))})."]
    return "\n".join(lines)


def _lost_by_sync(tests: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for test in tests:
        mode = str(value(test, "synchronous") or "off")
        lost = _as_number(value(test, "lost_writes"))
        acked = _as_number(value(test, "acked_writes"))
        if lost is None:
            continue
        prev = out.get(mode, (0.0, 0.0))
        out[mode] = (prev[0] + lost, prev[1] + (acked or 0))
    return out


def section_questions(ctx: _Context) -> str:
    results = ctx.results
    manual = _of_kind(results, "manual")
    automatic = _of_kind(results, "automatic")
    failovers = _of_kind(results, "manual", "automatic", "planned", "network")
    delays = _numbers(find_tests(results, "replication", "replication_delay_ms"), "replication_delay_ms")
    mark_down = _numbers(find_tests(results, "haproxy"), "haproxy_mark_down_ms")
    stale = _numbers(find_tests(results, "cache", "stale_window_ms"), "stale_window_ms")
    race = {str(value(t, "race_guard")): value(t, "race_stale_window_ms") for t in find_tests(results, None, "race_stale_window_ms")}
    lost = _lost_by_sync(failovers)
    rewound = _numbers(find_tests(results, None, "rewound_writes"), "rewound_writes")
    def lost_text(mode: str) -> str:
        if mode not in lost:
            return MISSING
        count, acked = lost[mode]
        return f"{num(count)} perdue(s) sur {num(acked)} acquittée(s)"

    by_switch: dict[str, list[Mapping[str, Any]]] = {}
    for test in manual:
        by_switch.setdefault(str(value(test, "switch")), []).append(test)
    recoveries = {switch: median_of(tests, "write_recovery_s") for switch, tests in by_switch.items()}
    recoveries = {switch: found for switch, found in recoveries.items() if found is not None}
    ranked = sorted(recoveries.items(), key=lambda item: item[1])
    brief_routing = [t for t in find_tests(results, "haproxy") if "routes_by_port_alone" in str(t.get("name"))]
    methods_text = (" ; ".join(f"`{switch}` {fig(found, 's')}" for switch, found in ranked)
                    + f" (la plus rapide ici : `{ranked[0][0]}`)") if ranked else MISSING
    bonus = {key: _passed_of(results, key) for key in BONUS_MARKERS}
    rewound_text = (f" Le scénario pg_rewind efface à dessein {num(sum(rewound))} écriture(s) acquittée(s) par "
                    "l'ancien primary seul : un risque de l'asynchrone que la bascule ne montre pas, compté à part."
                    if rewound else "")
    return "\n".join(
        [
            "## 8. Questions finales",
            "",
            "1. **Réplication ≠ haute disponibilité.** La réplication copie les données (délai mesuré "
            f"primary → replica : {spread(delays, 'ms')}) mais ne garde pas le service : primary arrêté, "
            "les écritures échouent jusqu'à la promotion et la bascule (partie F, "
            f"{label_of('rto_s')} : {spread(_numbers(manual, 'rto_s'), 's')}, dont "
            f"« {label_of('detection_s')} » {fig(median_of(manual, 'detection_s'), 's')}, "
            f"« {label_of('operator_action_s')} » {fig(median_of(manual, 'operator_action_s'), 's')} et "
            f"« {label_of('write_recovery_s')} » {fig(median_of(manual, 'write_recovery_s'), 's')} en médiane). "
            "La HA ajoute la détection, la promotion et le réacheminement, idéalement sans humain.",
            "2. **Manuel / automatique.** Automatique : la réplication, la détection par HAProxy "
            f"({spread(mark_down, 'ms')}), le TTL et le passage sans cache. Manuel : la promotion et la "
            "bascule HAProxy (section 7). Failover automatique avec Patroni (bonus) après une panne, "
            f"{label_of('rto_s')} : {spread(_numbers(automatic, 'rto_s'), 's')}, dont élection "
            f"{fig(median_of(automatic, 'time_to_new_primary_s'), 's')} en médiane.",
            "3. **Risques cache + réplication.** Lecture d'une ancienne valeur juste après un `PUT` "
            f"(D4) : {spread(stale, 'ms')}. Course de remplissage, valeur obsolète servie sans garde "
            f"LSN : {fig(race.get('off'), 'ms')} ; avec la garde : {fig(race.get('on'), 'ms')}. Écritures "
            f"acquittées perdues pendant les bascules, en asynchrone : {lost_text('off')} ; en synchrone : "
            f"{lost_text('on')}.{rewound_text}",
            "4. **Améliorations pour la production.** Failover automatique (Patroni + etcd) : plus de "
            "temps de réaction humain dans « nouveau primary » ; checks HAProxy sensibles au rôle plutôt qu'un "
            "simple `tcp-check connect`, qui envoie les écritures à un nœud devenu replica (scénario "
            f"`brief_config_routes_by_port_alone` : {verdict_of(brief_routing)}) ; une "
            "bascule choisie sur mesure (reprise des écritures après l'action, médianes de cette exécution : "
            f"{methods_text}) ; "
            "réplication synchrone là où perdre une écriture acquittée est inacceptable ; Redis Sentinel "
            f"(bonus : {bonus['sentinel']}) ; anti cache-stampede (bonus : {bonus['stampede']}) ; "
            "supervision du retard de réplication.",
        ]
    )


def section_bonuses(ctx: _Context) -> str:
    """Anti cache-stampede and Redis Sentinel figures (Patroni's are in the failover section)."""
    lines = ["## 9. Bonus", ""]
    stampede = find_tests(ctx.results, "stampede")
    rows = []
    for name, what in (
        ("db_reads_cold_key_protection_off", "clé froide, GET concurrents, sans protection"),
        ("db_reads_cold_key_protection_on", "clé froide, GET concurrents, avec protection"),
        ("db_reads_cold_key_two_processes", "clé froide, deux processus API"),
        ("max_db_reads_per_100ms_protection_off", "clé chaude à l'expiration, sans protection, pire fenêtre de 100 ms"),
        ("max_db_reads_per_100ms_protection_on", "clé chaude à l'expiration, avec protection, pire fenêtre de 100 ms"),
    ):
        found = first_value(stampede, name)
        if found is not None:
            rows.append((what, cell(found)))
    concurrent = first_value(stampede, "concurrent_gets")
    if rows:
        lines += [f"Anti cache-stampede (single flight + verrou Redis + XFetch ; {cell(concurrent)} GET concurrents), "
                  f"{label_of('db_reads')} :", "", md_table(("Mesure", "Lectures SQL"), rows)]
    else:
        lines.append(f"Anti cache-stampede : {MISSING}.")
    sentinel_rows = [
        (f"`{value(test, 'fault') or label(test)}`", cell(value(test, "sentinel_promotion_s"), "s"),
         cell(value(test, "cache_hits_resume_s"), "s"),
         f"{cell(value(test, 'failed_reads'))} / {cell(value(test, 'reads_total'))}", outcome_fr(test))
        for test in find_tests(ctx.results, "sentinel") if value(test, "sentinel_promotion_s") is not None
    ]
    lines.append("")
    if sentinel_rows:
        names = ("sentinel_promotion_s", "cache_hits_resume_s")
        lines += ["Redis Sentinel (maître tué ou gelé sous charge de lectures) :", "",
                  md_table(("Panne du maître", *(heading(n) for n in names), "Lectures en échec / total",
                            "Verdict"), sentinel_rows), "", legend(names)]
    else:
        lines.append(f"Redis Sentinel : {MISSING}.")
    return "\n".join(lines)


def _grade_cell(grade: Mapping[str, Any] | None) -> str:
    if grade is None:
        return "non noté dans cette exécution (`python -m chaoslab grade --lab`)"
    return f"**{_fr_points(grade['points'])}/{_fr_points(grade['max_points'])}**"


def _fr_points(value: Any) -> str:
    return format_points(float(value)).replace(".", ",")


def _passed_of(results: Mapping[str, Any], marker: str) -> str:
    tests = find_tests(results, marker)
    if not tests:
        return NOT_RUN
    return f"{sum(t.get('outcome') == 'passed' for t in tests)}/{len(tests)} tests réussis"


def section_grade(ctx: _Context) -> str:
    """The rubric's grade of the lab's own stack, as the grader gave it (never from test outcomes)."""
    lines = ["## 10. Barème /20", ""]
    grade = ctx.grade
    if grade is None:
        lines.append("Note : non notée dans cette exécution : `python -m chaoslab grade --lab` la donne.")
    else:
        lines += [f"Note donnée par le correcteur (`chaoslab/grader`), le même que pour un rendu d'étudiant : "
                  f"chaque point vient d'un contrôle boîte noire ({grade.get('submission') or 'ce laboratoire'}).",
                  "", md_table(("Critère", "Points"), [(line["label"], f"{_fr_points(line['points'])}/"
                                                                     f"{_fr_points(line['weight'])}")
                                                      for line in grade["lines"]]
                                + [("**Total**", f"**{_fr_points(grade['points'])}/"
                                                 f"{_fr_points(grade['max_points'])}**")])]
        lost = [check for check in grade["checks"] if check["outcome"] != "passed"]
        if lost:
            lines += ["", "Points non obtenus :", ""]
            lines += [f"- `{check['id']}` ({_fr_points(check['max_points'])} pt) : {check['message']}" for check in lost]
    lines += ["", md_table(("Bonus (hors barème)", "Tests réussis"),
                           [(label, _passed_of(ctx.results, key)) for key, label in BONUS_MARKERS.items()])]
    return "\n".join(lines)


def render_report(
    results: Mapping[str, Any],
    out_dir: str | os.PathLike[str] = ".",
    plots_dir: str | os.PathLike[str] = "reports/plots",
    search_dirs: Sequence[str | os.PathLike[str]] = (),
    grade: Mapping[str, Any] | None = None,
) -> str:
    """The report's Markdown. Makes the plots into ``plots_dir`` as a side effect."""
    rootdir = results.get("run", {}).get("rootdir")
    dirs = ([Path(rootdir)] if rootdir else []) + [Path(d) for d in search_dirs] + [Path.cwd()]
    ctx = _Context(results, Path(out_dir).resolve(), Path(plots_dir).resolve(), dirs, grade)
    sections = [
        section_header(ctx),
        section_architecture(),
        section_read_write(ctx),
        section_cache(ctx),
        section_stale(ctx),
        section_resilience(ctx),
        section_network(ctx),
        section_failover(ctx),
        section_manual_auto(ctx),
        section_questions(ctx),
        section_bonuses(ctx),
        section_grade(ctx),
    ]
    if ctx.notes:
        sections.append("_Notes : " + " ; ".join(ctx.notes) + "._")
    return "\n\n".join(sections) + "\n"


def write_report(
    results_path: str | os.PathLike[str] = "reports/results.json",
    out_path: str | os.PathLike[str] = "report.md",
    plots_dir: str | os.PathLike[str] | None = None,
    grade_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Read ``results_path`` (and the grader's ``grade_path``, if given), write ``out_path`` and
    its plots; return ``out_path``."""
    results_path = Path(results_path)
    results = load_results(results_path)
    grade = json.loads(Path(grade_path).read_text(encoding="utf-8")) if grade_path else None
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots_dir = Path(plots_dir) if plots_dir is not None else results_path.parent / "plots"
    # attachment paths are relative to the repo: the rootdir, else the results file's parent's parent
    search = [results_path.resolve().parent.parent, results_path.resolve().parent]
    text = render_report(results, out.parent, plots_dir, search_dirs=search, grade=grade)
    out.write_text(text, encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoslab.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="reports/results.json", help="results file of the run")
    parser.add_argument("--out", default="report.md", help="Markdown report to write")
    parser.add_argument("--plots-dir", default=None, help="where to write the PNG plots (default: plots/ beside --results)")
    parser.add_argument("--grade", default=None, help="the grader's grade.json for the lab's own stack "
                        "(python -m chaoslab grade --lab)")
    args = parser.parse_args(argv)
    if not Path(args.results).exists():
        parser.error(f"{args.results}: no such results file; run pytest first")
    if args.grade and not Path(args.grade).exists():
        parser.error(f"{args.grade}: no such grade file; run python -m chaoslab grade --lab first")
    out = write_report(args.results, args.out, args.plots_dir, args.grade)
    print(f"rapport écrit : {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
