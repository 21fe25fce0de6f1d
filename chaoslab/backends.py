"""Backend selection by name (``--backend``), for each topology.

A backend is named by where it runs the servers; a topology by what it runs: the
brief's stack (``Cluster``) or the Patroni bonus (``BasePatroniCluster``, a cluster
of its own: etcd, two Patroni nodes, HAProxy, Redis). Classes are imported only when
chosen, so the local backend never needs Docker's tools and the reverse.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster
    from .patroni.base import BasePatroniCluster

# topology -> backend -> "module:class"
IMPLEMENTATIONS = {
    "brief": {"local": "chaoslab.local.cluster:LocalCluster", "compose": "chaoslab.compose.cluster:ComposeCluster"},
    "patroni": {"local": "chaoslab.local.patroni:PatroniCluster",
                "compose": "chaoslab.compose.patroni:ComposePatroniCluster"},
}
BACKENDS = tuple(IMPLEMENTATIONS["brief"])


def _create(topology: str, backend: str):
    try:
        module, _, name = IMPLEMENTATIONS[topology][backend].partition(":")
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), name)()


def create_cluster(backend: str) -> Cluster:
    return _create("brief", backend)


def create_patroni_cluster(backend: str) -> BasePatroniCluster:
    return _create("patroni", backend)
