"""Backend selection by name (``--backend``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cluster import Cluster

if TYPE_CHECKING:
    from .patroni.base import BasePatroniCluster


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


# The Patroni bonus topology is a cluster of its own (etcd, two Patroni nodes, HAProxy,
# Redis), on the same backends.
def _local_patroni() -> BasePatroniCluster:
    from .local.patroni import PatroniCluster
    return PatroniCluster()


def _compose_patroni() -> BasePatroniCluster:
    from .compose.patroni import ComposePatroniCluster
    return ComposePatroniCluster()


PATRONI_BACKENDS = {"local": _local_patroni, "compose": _compose_patroni}


def create_patroni_cluster(name: str) -> BasePatroniCluster:
    try:
        return PATRONI_BACKENDS[name]()
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(sorted(PATRONI_BACKENDS))}") from None
