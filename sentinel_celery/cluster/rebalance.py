"""Rebalancing: tasks waiting in a direct queue go back home when that worker cannot take them soon.

Run by the cluster leader every ``distributed.loadBalancer.rebalanceIntervalMs`` (see
:mod:`sentinel_celery.cluster.coordination`; the failover monitor may call :func:`rebalance` too — running
it twice is harmless, every move is an atomic compare-and-move):

* a worker that is gone from the registry, offline, stale, draining or stopping: everything waiting
  in its direct queue goes home;
* an online worker that is overloaded (tasks it holds + tasks waiting for it > its slots): the
  excess goes home, newest first.

A message's home is its ``sentinel_home`` property (the type queue, or the coordinator queue under
``master_worker``/``hierarchical``), else the type of its task, else the default queue. Moved
messages go to the head of their home queue (they were scheduled before what waits there).

Redis keys: reads ``balancer:direct-queues`` (workers that have a direct queue) and the registry;
removes from that set the workers that are gone and whose direct queue is empty.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sentinel_celery.broker.base import Broker
from sentinel_celery.broker.factory import broker_for
from sentinel_celery.config import Config
from sentinel_celery.routing import HOME_PROPERTY, direct_queue_name
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.registry import ONLINE, RedisRegistry
from sentinel_celery.worker.queues import direct_queues_key

logger = logging.getLogger(__name__)


@dataclass
class RebalanceReport:
    moved: dict[str, int] = field(default_factory=dict)       # worker id -> messages moved home
    reasons: dict[str, str] = field(default_factory=dict)     # worker id -> why
    task_ids: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.moved.values())


def home_queue(app, cfg: Config, message: dict) -> str:
    """Where a message waiting in a direct queue belongs when it leaves it."""
    props = message.get("properties") or {}
    if props.get(HOME_PROPERTY):
        return props[HOME_PROPERTY]
    if props.get("job_type") in cfg.task_types:
        return props["job_type"]
    task = app.tasks.get((message.get("headers") or {}).get("task") or "")
    task_type = getattr(task, "task_type", None)
    if task_type in cfg.task_types:
        return task_type
    return app.conf.task_default_queue or "celery"


def rebalance(app, cfg: Config, *, registry: RedisRegistry | None = None,
              broker: Broker | None = None) -> RebalanceReport:
    """One rebalancing pass over every known direct queue; see the module docstring."""
    client = get_redis(cfg.redis_url)
    registry = registry or RedisRegistry(client, cfg.namespace, cfg.get("distributed.heartbeat.staleThresholdMs"))
    broker = broker or broker_for(app)
    report = RebalanceReport()
    workers = {w.id: w for w in registry.workers(include_offline=True)}
    known = set(client.smembers(direct_queues_key(cfg.namespace)))
    known |= {wid for wid, w in workers.items() if direct_queue_name(wid) in (w["queues"] or [])}
    if not known:
        return report
    ids = sorted(known)
    depths = broker.depths(direct_queue_name(wid) for wid in ids)
    for wid in ids:
        depth = depths[direct_queue_name(wid)]
        info = workers.get(wid)
        if depth == 0:
            if info is None:
                client.srem(direct_queues_key(cfg.namespace), wid)
            continue
        if info is None:
            reason, limit = "gone", None
        elif info.status != ONLINE:
            reason, limit = info.status, None
        else:
            held = max(info.active, int(info["reserved"] or 0))
            excess = held + depth - info.max_tasks
            if excess <= 0:
                continue
            reason, limit = f"overloaded ({held} held + {depth} waiting > {info.max_tasks} slots)", excess
        moved = broker.move_all(direct_queue_name(wid), lambda m: home_queue(app, cfg, m), limit=limit)
        if moved:
            report.moved[wid] = len(moved)
            report.reasons[wid] = reason
            report.task_ids.extend(w.task_id for w, _ in moved if w.task_id)
            logger.info("sentinel: rebalance moved %d waiting task(s) from %s (%s) back to %s",
                        len(moved), wid, reason, ",".join(sorted({dest for _, dest in moved})))
    return report
