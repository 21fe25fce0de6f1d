"""Bonus: automatic failover with Patroni and etcd.

See ``base.BasePatroniCluster`` for the topology and what every backend shares,
``chaoslab.local.patroni.PatroniCluster`` for local processes (``chaoslab.compose.patroni``
for containers), and ``config.Timings`` for the timings and why.
"""

from .base import BasePatroniCluster
from .config import LAB_TIMINGS, NODES, Timings

__all__ = ["LAB_TIMINGS", "NODES", "BasePatroniCluster", "Timings"]
