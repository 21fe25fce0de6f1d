"""Backend selection by name (``--backend``)."""

from __future__ import annotations

from .backend import Cluster


def _local() -> Cluster:
    from .local.cluster import LocalCluster
    return LocalCluster()


def _compose() -> Cluster:
    from .compose.cluster import ComposeCluster
    return ComposeCluster()


BACKENDS = {"local": _local, "compose": _compose}


def create_cluster(name: str) -> Cluster:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None
