"""Checkers: pure functions that turn a History into verdicts and figures, and the
definition of every figure the report prints.

No I/O here: the caller fetches what the database holds (``present_names``)
and passes it in, so every checker can be tested on a hand-built history.
Times in results are seconds; points in time are relative to the history's
start, like the saved history, so they can be plotted against it.

Uncertainty is kept apart, never folded into a verdict: an ``unknown`` (or
never completed) write may or may not have happened, so it is neither lost
nor an anomaly whichever way the database says.

A figure is defined once, here: its name (the key in ``results.json``), its unit,
and one French sentence that says from what to what it is measured. The report
takes its captions from :data:`MEASURES` and compares a figure only with figures
of the same name, so two measures that differ in definition differ in name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chaoslab.history import COMPLETION_TYPES, OP_FS, History, Op

# -- the markers a failover scenario puts in its history ----------------------------------------
# Marked once the fault has happened (the node is down, killed or frozen when the call
# returns): a write that a dying primary still served is no recovery.
FAULT = "fault"
# Marked when the operator starts acting on what they saw (part F: the promotion begins).
ACTION = "action"
# Marked once the action that gives writes a new primary is over: the promotion and the
# HAProxy switch done by hand (part F), or Patroni's new leader seen promoted (bonus).
NEW_PRIMARY = "new-primary"


@dataclass(frozen=True)
class Measure:
    """A figure of the report: ``name`` in results.json, ``label`` and ``definition`` in French."""

    name: str
    unit: str
    label: str
    definition: str


MEASURES: dict[str, Measure] = {m.name: m for m in (
    # -- failover (part F and the Patroni bonus), computed below from a workload's history
    Measure("rto_s", "s", "RTO",
            "de la panne à la première écriture acquittée parmi celles envoyées après la panne"),
    Measure("time_to_new_primary_s", "s", "nouveau primary",
            "de la panne à la fin de l'action qui donne un nouveau primary : promotion et bascule HAProxy "
            "(à la main, ici par le harnais, sans temps de réaction humain) ou élection par Patroni"),
    Measure("detection_s", "s", "détection",
            "de la panne au début de l'action de l'opérateur, une fois vus l'écriture refusée et la lecture "
            "servie par la replica (F1) : ici le harnais, sans temps de réaction humain"),
    Measure("operator_action_s", "s", "action de l'opérateur",
            "du début de l'action à sa fin : promotion de la replica et bascule HAProxy (F2, F3)"),
    Measure("write_recovery_s", "s", "reprise des écritures",
            "de la fin de cette action à la première écriture acquittée parmi celles envoyées après elle : "
            "le temps propre du système (HAProxy, API)"),
    Measure("longest_write_outage_s", "s", "plus longue interruption",
            "la plus longue suite d'écritures refusées ou sans réponse vue par les clients, de l'envoi de la "
            "première à l'acquittement de l'écriture suivante"),
    Measure("acked_writes", "", "écritures acquittées", "écritures de la charge que l'API a acquittées (2xx)"),
    Measure("lost_writes", "", "perdues",
            "écritures acquittées absentes du primary à la fin du scénario (le RPO, en écritures)"),
    Measure("unknown_writes", "", "incertaines",
            "écritures restées sans réponse (délai dépassé) : peut-être appliquées, jamais comptées perdues"),
    Measure("failed_but_present_writes", "", "refusées mais présentes",
            "écritures que l'API a refusées et que la base contient pourtant"),
    Measure("rewound_writes", "", "effacées par pg_rewind",
            "écritures acquittées par l'ancien primary seul (sa replica arrêtée), effacées quand pg_rewind "
            "le remet en replica du nouveau primary : perdues à dessein, pas par une bascule"),
    Measure("stale_reads", "", "lectures obsolètes",
            "lectures d'une écriture acquittée, envoyées plus de la tolérance après son acquittement, qui ne "
            "l'ont pas vue (404 ou autre valeur)"),
    Measure("failed_reads", "", "lectures en échec", "lectures refusées ou sans réponse"),
    # -- parts B to E, measured by their scenarios
    Measure("replication_delay_ms", "ms", "délai de réplication",
            "d'une écriture validée sur le primary à la ligne visible sur la replica"),
    Measure("write_refused_ms", "ms", "écriture refusée (F1)",
            "durée de la réponse (503, ou 502/504 si l'issue est inconnue) à la première écriture envoyée "
            "par l'API après la panne du primary"),
    Measure("first_fallback_ms", "ms", "première lecture de repli (E2)",
            "durée de la première lecture après l'arrêt de la replica, servie par le primary ou refusée "
            "selon la politique"),
    Measure("haproxy_mark_down_ms", "ms", "détection par HAProxy",
            "de l'arrêt du primary au serveur marqué DOWN par les checks de HAProxy (config sensible au rôle)"),
    Measure("haproxy_reroute_ms", "ms", "réacheminement par HAProxy",
            "de la promotion de la replica à la première connexion d'écriture qui arrive sur elle"),
    Measure("cache_ttl_s", "s", "TTL", "durée de vie de `product:{id}` lue dans Redis (commande TTL)"),
    Measure("get_p50_ms", "ms", "GET p50", "médiane de la latence de `GET /products/{id}` vue par le client"),
    Measure("get_p95_ms", "ms", "GET p95", "95e centile de la latence de `GET /products/{id}` vue par le client"),
    Measure("db_reads", "", "lectures SQL d'un produit",
            "exécutions de la requête qui lit un produit, comptées par PostgreSQL (pg_stat_statements) sur "
            "les deux nœuds"),
    Measure("stale_window_ms", "ms", "fenêtre obsolète (D4)",
            "d'un `PUT` acquitté au premier `GET` qui rend la nouvelle valeur, replica retardée"),
    Measure("race_stale_window_ms", "ms", "valeur obsolète servie",
            "d'un `PUT` acquitté au premier `GET` qui rend la nouvelle valeur, quand un miss a rempli le cache "
            "depuis une replica en retard"),
    Measure("p50_ms_no_cache", "ms", "p50 sans cache",
            "médiane des lectures, cache désactivé, Redis en marche (même exécution)"),
    Measure("p99_ms_no_cache", "ms", "p99 sans cache",
            "99e centile des lectures, cache désactivé, Redis en marche (même exécution)"),
    Measure("p50_ms_breaker_open", "ms", "p50 Redis en panne",
            "médiane des lectures envoyées plus d'une seconde après la panne de Redis"),
    Measure("p99_ms_breaker_open", "ms", "p99 Redis en panne",
            "99e centile des lectures envoyées plus d'une seconde après la panne de Redis"),
    Measure("redis_gets_while_open", "", "GET reçus par Redis",
            "commandes GET servies par Redis (son `INFO commandstats`) d'une seconde après la panne du lien "
            "à la fin de la charge"),
    Measure("reads_while_open", "", "lectures de l'API",
            "lectures envoyées à l'API sur la même période"),
    Measure("cache_back_after_s", "s", "retour du cache",
            "de la fin de la panne à la première clé remplie de nouveau dans Redis par l'API"),
    Measure("replication_latency_ms", "ms", "latence du lien de réplication",
            "délai ajouté par le proxy de pannes au flux WAL du primary vers la replica"),
    Measure("replay_lag_ms_max", "ms", "retard de rejeu maximal",
            "plus grand `replay_lag` de la replica dans `pg_stat_replication` du primary pendant la mesure"),
    Measure("replay_lag_bytes_max", "o", "retard maximal en octets",
            "plus grand écart entre `pg_current_wal_lsn()` et le `replay_lsn` de la replica, vu du primary"),
    Measure("put_p50_ms_sync", "ms", "p50 PUT synchrone",
            "médiane de 10 `PUT` avec `synchronous_commit = remote_apply`, lien de réplication normal"),
    Measure("put_p50_ms_sync_slow_link", "ms", "p50 PUT synchrone, lien lent",
            "médiane de 10 `PUT` avec `synchronous_commit = remote_apply`, lien de réplication ralenti"),
    Measure("wal_retained_bytes", "o", "WAL gardé par le slot",
            "écart entre `pg_current_wal_lsn()` et le `restart_lsn` du slot de la replica à la fin de la coupure"),
    Measure("writes_behind_at_heal", "", "écritures absentes de la replica",
            "écritures acquittées pendant la panne du lien de réplication (coupure ou débit limité) et absentes de "
            "la replica au moment du rétablissement"),
    Measure("replication_kbps", "KB/s", "débit du lien de réplication",
            "débit maximal imposé par le proxy de pannes au lien de réplication, dans chaque sens"),
    Measure("catch_up_s", "s", "rattrapage",
            "du rétablissement du lien au rejeu par la replica de tout ce que le primary avait écrit"),
    Measure("stalled_write_answer_s", "s", "réponse à l'écriture bloquée",
            "durée du `PUT` envoyé en réplication synchrone, lien de réplication coupé"),
    Measure("haproxy_marked_down_s", "s", "primary marqué DOWN par HAProxy",
            "de la partition entre HAProxy et le primary (le leader, sous Patroni) à l'état DOWN de ce nœud dans "
            "`show stat` de HAProxy"),
    Measure("demoted_after_s", "s", "leader rétrogradé après",
            "de la coupure vers etcd au premier échantillon (toutes les 50 ms) où le PostgreSQL du leader se dit "
            "standby (`pg_is_in_recovery()`)"),
    Measure("no_primary_s", "s", "aucun primary pendant",
            "du dernier échantillon où l'ancien leader se dit primary au premier où le nouveau le dit"),
    Measure("writes_back_after_heal_s", "s", "écritures de retour après",
            "de la fin de la partition au premier `POST` acquitté par l'API inchangée"),
    Measure("writes_acked_without_etcd", "", "écritures acquittées sans etcd",
            "écritures de l'API envoyées pendant la coupure d'etcd, une fois le bail (`ttl`) de la clé du leader "
            "écoulé, et acquittées avant son retour"),
    Measure("writes_on_old_primary", "", "écritures acceptées par l'ancien primary",
            "écritures d'un client qui joint encore l'ancien primary en direct, après la promotion, "
            "présentes dans sa table `products`"),
    Measure("writes_on_new_primary", "", "écritures acceptées par le nouveau primary",
            "écritures de l'API (par HAProxy) après la promotion, présentes dans la table du nouveau primary"),
    # -- Redis Sentinel (bonus topology)
    Measure("sentinel_promotion_s", "s", "promotion par Sentinel",
            "de la panne du maître (tué ou gelé) au premier échantillon (toutes les 100 ms) où les trois "
            "Sentinels désignent le même nouveau maître et où celui-ci se dit maître"),
    Measure("cache_hits_resume_s", "s", "retour des hits du cache",
            "de la panne du maître au premier `GET` servi depuis Redis (nouveau maître) par l'API"),
    Measure("promoted_after_cut_s", "s", "replica promue après",
            "de la partition entre le maître Redis et les trois Sentinels au premier échantillon (toutes les "
            "20 ms) où la replica se dit maître (son propre `INFO replication`)"),
    Measure("old_master_acked_after_promotion", "", "écritures acquittées par l'ancien maître",
            "écritures d'un client qui joint encore l'ancien maître Redis en direct, acquittées par lui après la "
            "promotion de la replica"),
    Measure("old_master_refused_writes", "", "écritures refusées par l'ancien maître",
            "écritures de ce client refusées par l'ancien maître (`NOREPLICAS` : aucune replica à jour)"),
    Measure("direct_writes_lost", "", "écritures acquittées puis perdues",
            "écritures de ce client acquittées par l'ancien maître et absentes du nouveau maître une fois "
            "l'ancien redevenu sa replica"),
    Measure("sentinel_link_ping_ms", "ms", "PING par le lien d'une Sentinel",
            "un `PING` du banc au maître Redis par le proxy du lien d'une Sentinel vers lui, latence ajoutée"),
    Measure("master_ping_ms_max", "ms", "PING direct le plus lent",
            "le plus lent des `PING` d'un client qui joint le maître en direct pendant la latence sur les liens "
            "des Sentinels"),
    Measure("spurious_failover_after_s", "s", "bascule d'un maître sain après",
            "de la latence ajoutée sur les liens des trois Sentinels vers le maître au premier échantillon "
            "(toutes les 50 ms) où la replica se dit maître (son propre `INFO replication`)"),
)}


def measure(name: str) -> Measure:
    """The definition of a figure; a name that is not defined here is a bug."""
    try:
        return MEASURES[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a defined measure (chaoslab.checkers.MEASURES)") from None


# -- lost writes ------------------------------------------------------------------------------
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


# -- failover figures ----------------------------------------------------------------------------
def _event(history: History, name: str) -> float:
    at = history.event_time(name)
    if at is None:
        raise ValueError(f"no {name!r} event in the history; mark it when it happens")
    return at


def _write_pairs(history: History) -> list[tuple[Op, Op]]:
    return [(inv, done) for inv, done in history.pairs() if inv.f == "write"]


def first_ack_after(history: History, event: str) -> float | None:
    """Seconds from ``event`` to the completion of the first ok write invoked at or after it.

    A write invoked before the event proves nothing about what followed it, so it
    does not count even if it completes later. None when no such write succeeded.
    """
    since = _event(history, event)
    acks = [done.time for inv, done in _write_pairs(history) if inv.time >= since and done.type == "ok"]
    return min(acks) - since if acks else None


def rto(history: History) -> float | None:
    """``rto_s``: from the fault to the first acknowledged write sent after it."""
    return first_ack_after(history, FAULT)


def time_to_new_primary(history: History) -> float:
    """``time_to_new_primary_s``: from the fault to the end of the action that gave writes a new primary."""
    return _event(history, NEW_PRIMARY) - _event(history, FAULT)


def detection(history: History) -> float:
    """``detection_s``: from the fault to the operator's first action."""
    return _event(history, ACTION) - _event(history, FAULT)


def operator_action(history: History) -> float:
    """``operator_action_s``: from the operator's first action to the end of it (a new primary)."""
    return _event(history, NEW_PRIMARY) - _event(history, ACTION)


def write_recovery(history: History) -> float | None:
    """``write_recovery_s``: from the end of that action to the first acknowledged write sent after it."""
    return first_ack_after(history, NEW_PRIMARY)


def longest_write_outage(history: History) -> float | None:
    """``longest_write_outage_s``: the longest stretch from the invoke of a refused or
    unanswered write to the completion of the next acknowledged one (in invoke order).
    What a client lived through, whatever caused it: a planned switchover has no fault
    to measure from, and a write sent just before a fault and refused after it counts.

    0 if no write was refused; None if writes never came back.
    """
    writes = sorted(_write_pairs(history), key=lambda pair: pair[0].time)
    longest, refused_since = 0.0, None
    for invoke, done in writes:
        if done.type != "ok":
            refused_since = invoke.time if refused_since is None else refused_since
        elif refused_since is not None:
            longest, refused_since = max(longest, done.time - refused_since), None
    return None if refused_since is not None else longest


def writes_acked_between(history: History, after: str, before: str) -> list[str]:
    """Writes invoked after event ``after`` and acknowledged before event ``before``.

    With ``after`` the fault and ``before`` the switch, any such write shows that
    writes came back before anyone acted: the observation that F3 is needed.
    """
    start, end = _event(history, after), _event(history, before)
    return [inv.value for inv, done in _write_pairs(history)
            if inv.time >= start and done.type == "ok" and done.time < end]


@dataclass(frozen=True)
class FailoverFigures:
    """The failover measures of one history (see MEASURES for their definitions)."""

    rto_s: float | None
    time_to_new_primary_s: float | None
    detection_s: float | None
    operator_action_s: float | None
    write_recovery_s: float | None
    longest_write_outage_s: float | None

    def rounded(self) -> dict[str, float | None]:
        return {name: None if value is None else round(value, 3) for name, value in asdict(self).items()}


def failover_figures(history: History) -> FailoverFigures:
    """All the failover measures a history holds: a planned switchover has no FAULT
    marker, so it has no RTO and no time to a new primary, only its outage."""
    names = {event.name for event in history.events}
    has_fault, has_new_primary = FAULT in names, NEW_PRIMARY in names
    return FailoverFigures(
        rto_s=rto(history) if has_fault else None,
        time_to_new_primary_s=time_to_new_primary(history) if has_fault and has_new_primary else None,
        # Only a failover done by hand has an operator; Patroni's is automatic.
        detection_s=detection(history) if has_fault and ACTION in names else None,
        operator_action_s=operator_action(history) if ACTION in names and has_new_primary else None,
        write_recovery_s=write_recovery(history) if has_new_primary else None,
        # The whole history: a write sent just before the fault and refused after it is part
        # of the outage its client lived through.
        longest_write_outage_s=longest_write_outage(history),
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


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

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


@dataclass(frozen=True)
class WorkloadReadsResult:
    """The readers of a workload, judged against the workload's own writes.

    ``stale``: (id, what came back, seconds since the write's ack) for each read of
    an acknowledged write that was invoked ``grace`` seconds or more after the ack
    and did not return that write's name. ``failed``: reads refused or unanswered.
    """

    judged: int
    stale: list[tuple[Any, Any, float]]
    failed: list[Op]

    @property
    def ok(self) -> bool:
        return not self.stale and not self.failed

    @property
    def max_stale_age(self) -> float | None:
        return round(max(age for _, _, age in self.stale), 6) if self.stale else None


def check_workload_reads(history: History, *, grace: float, lost_names: Iterable[str] = ()) -> WorkloadReadsResult:
    """Every read must answer, and every read of an acknowledged write must see it once
    ``grace`` seconds have passed since the ack (the replication lag a reader may see).
    Reads of lost writes are not judged: the lost-write check counts those.
    """
    lost = set(lost_names)
    acked = {done.result: (inv.value, done.time) for inv, done in _write_pairs(history)
             if done.type == "ok" and done.result is not None and inv.value not in lost}
    judged, stale, failed = 0, [], []
    for inv, done in history.pairs():
        if inv.f != "read":
            continue
        if done.type != "ok":
            failed.append(done)
            continue
        if inv.value not in acked:
            continue
        name, ack_time = acked[inv.value]
        if inv.time < ack_time + grace:
            continue  # within the lag a reader may see: either answer is fine
        judged += 1
        if done.result != name:
            stale.append((inv.value, done.result, round(inv.time - ack_time, 6)))
    return WorkloadReadsResult(judged=judged, stale=stale, failed=failed)
