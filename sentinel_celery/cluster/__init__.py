"""The cluster layer: the duties one elected process runs for the whole cluster.

Owns: failover detection and recovery (monitor.py, failover.py, connection_watch.py for dead processes), load balancing (balancer.py),
rebalancing of direct queues (rebalance.py), coordination patterns and the cluster leader
(coordination.py), draining (drain.py), auto-scaling (autoscale.py, processes.py for the local
scaler), the cluster snapshot (snapshot.py) and alerts over it (alerts.py).

Every worker runs these duties' threads; each acts only while it holds its leader lease. They can
also run standalone (``sentinel monitor``, ``sentinel autoscale run``).

May import: github/ (the mirror's status, for the snapshot), task, worker/ (to attach duty threads
to a worker's runtime), broker/, state/, routing, config.
"""
from __future__ import annotations

from celery import Celery

from sentinel_celery.cluster.coordination import connect_coordination
from sentinel_celery.cluster.monitor import connect_monitor
from sentinel_celery.config import Config


def connect(app: Celery, cfg: Config) -> None:
    """Run the cluster duties' threads in every Sentinel worker of ``app``; called by ``install()``."""
    connect_coordination()
    connect_monitor()
