"""Bonus: automatic failover with Patroni and etcd, on the local backend.

See ``cluster.PatroniCluster`` for the topology and ``config.Timings`` for the
timings and why.
"""

from .cluster import PatroniCluster
from .config import LAB_TIMINGS, NODES, Timings

__all__ = ["LAB_TIMINGS", "NODES", "PatroniCluster", "Timings"]
