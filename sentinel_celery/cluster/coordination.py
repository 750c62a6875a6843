"""Coordination patterns, and the cluster leader's duties (rebalance, dispatch, autoscale).

``distributed.coordination.pattern``:
  peer_to_peer   (default) clients route to type queues or, by strategy, to direct queues; every
                 worker pulls; leases decide who may do what.
  master_worker  clients route typed tasks to a coordinator queue ``sentinel.coord.<type>`` that no
                 worker consumes; the cluster leader (the master) moves each task to a chosen
                 worker's direct queue when that worker has a free slot, by the configured strategy
                 (``pull`` means ``least_loaded`` here), and records the assignment in the
                 ``assignments`` memory namespace.
  hierarchical   the same coordinator queues, but every worker whose ``metadata.role`` is
                 ``leader`` assigns to the workers of its group (``metadata.group``, else
                 ``metadata.region``; itself included). Leaders compete for the coordinator queue,
                 and a leader takes a task only when its group has a free slot, so groups pull work
                 while members are pushed work. When no online leader's group runs a type, the
                 cluster leader moves that type's coordinator queue to its type queue, so nothing
                 waits for a leader forever.

A move out of a coordinator queue is one atomic compare-and-move; the message's home becomes the
coordinator queue, so a task restored after a worker died (or retried) is assigned again.

The cluster leader is elected with the fenced lease ``sentinel:rebalancer``; every worker runs a
:class:`CoordinationThread` that tries to take it. The leader rebalances direct queues
(:func:`sentinel_celery.cluster.rebalance.rebalance`), dispatches (``master_worker``), falls back when
there is no group leader (``hierarchical``) and runs the autoscaler when it is enabled.

Redis keys: the ``sentinel:rebalancer`` lease (see state/leases.py); assignments through state/memory.py
(``mem:assignments:*``); the broker lists ``sentinel.coord.<type>``.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from typing import Callable

from sentinel_celery.broker.base import Broker, Waiting
from sentinel_celery.broker.factory import broker_for
from sentinel_celery.cluster.autoscale import AutoscaleDuty
from sentinel_celery.cluster.balancer import Balancer
from sentinel_celery.cluster.rebalance import rebalance
from sentinel_celery.config import Config
from sentinel_celery.routing import coordinator_queue_name, direct_queue_name
from sentinel_celery.state.leases import LockContended, get_backend, release_quietly, try_acquire
from sentinel_celery.state.memory import shared_memory
from sentinel_celery.state.registry import ONLINE, WorkerInfo, get_registry
from sentinel_celery.worker.duty import DutyThread, run_step
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

LEADER_LEASE = "sentinel:rebalancer"
ASSIGNMENTS = "assignments"


def group_of(info: WorkerInfo | dict) -> str:
    md = (info["metadata"] if isinstance(info, WorkerInfo) else info.get("metadata")) or {}
    return str(md.get("group") or md.get("region") or "")


def is_group_leader(metadata: dict | None) -> bool:
    return (metadata or {}).get("role") == "leader"


def message_kwargs(message: dict) -> dict:
    """The task's keyword arguments from a waiting message (protocol 2, JSON)."""
    try:
        body = message.get("body") or ""
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if "json" not in (message.get("content-type") or "json"):
            return {}
        decoded = json.loads(body)
        return decoded[1] if isinstance(decoded, list) and len(decoded) > 1 and isinstance(decoded[1], dict) else {}
    except (ValueError, TypeError):
        return {}


class Dispatcher:
    """Moves waiting tasks from coordinator queues to chosen workers' direct queues."""

    def __init__(self, app, cfg: Config, *, assigner: str, only: Callable[[WorkerInfo], bool] | None = None,
                 balancer: Balancer | None = None, broker: Broker | None = None, memory=None):
        self.app = app
        self.cfg = cfg
        self.assigner = assigner
        self.only = only
        self.balancer = balancer or Balancer(app, cfg)
        self.broker = broker or broker_for(app)
        self._memory = memory

    @property
    def memory(self):
        if self._memory is None:
            self._memory = shared_memory(self.cfg)
        return self._memory

    @property
    def strategy(self) -> str:
        s = self.cfg.get("distributed.loadBalancer.strategy")
        return "least_loaded" if s == "pull" else s

    def dispatch_once(self, task_types: list[str] | None = None, limit: int = 500) -> int:
        """Assign what waits while workers have free slots; returns how many were assigned."""
        self.balancer.view.refresh()
        assigned = 0
        for task_type in task_types or self.cfg.task_types:
            source = coordinator_queue_name(task_type)
            while assigned < limit:
                waiting = self.broker.oldest(source)
                if waiting is None:
                    break
                affinity = self._affinity(waiting)
                chosen = self.balancer.choose(task_type, self.strategy, affinity=affinity, only=self.only)
                if chosen is None:
                    self.broker.put_back(waiting)
                    break  # no free slot for this type now: it waits in the coordinator queue
                if self.broker.move_oldest(waiting, direct_queue_name(chosen.id), home=source):
                    assigned += 1
                    self._record(waiting, task_type, chosen.id)
        return assigned

    def _affinity(self, waiting: Waiting) -> str | None:
        if self.strategy != "affinity" and not self.cfg.get("distributed.loadBalancer.affinityEnabled"):
            return None
        key = self.cfg.get("distributed.loadBalancer.options.affinityKey")
        value = message_kwargs(waiting.message).get(key)
        return None if value is None else str(value)

    def _record(self, waiting: Waiting, task_type: str, worker_id: str) -> None:
        if not waiting.task_id:
            return
        record = {"worker": worker_id, "type": task_type, "task": waiting.task_name, "by": self.assigner,
                  "at": time.time()}
        try:
            self.memory.update(waiting.task_id, lambda _: record, ASSIGNMENTS,
                               ttl=self.cfg.get("distributed.coordination.assignmentTtlSeconds"))
        except Exception as exc:  # the assignment itself is done; the record is for operators
            logger.warning("sentinel: could not record assignment of %s: %s", waiting.task_id, exc)


def leaderless_fallback(app, cfg: Config, workers: list[WorkerInfo], broker: Broker | None = None) -> int:
    """``hierarchical``: a type that no online group leader can place (no leader whose group has an
    online worker of that type) goes from its coordinator queue to its type queue, so it is pulled."""
    online = [w for w in workers if w.status == ONLINE]
    leader_groups = {group_of(w) for w in online if is_group_leader(w["metadata"])}
    broker = broker or broker_for(app)
    moved = 0
    for task_type in cfg.task_types:
        if any(group_of(w) in leader_groups and task_type in (w["queues"] or []) for w in online):
            continue
        n = len(broker.move_all(coordinator_queue_name(task_type), task_type))
        if n:
            logger.warning("sentinel: no group leader can place %s tasks; moved %d to the %s queue",
                           task_type, n, task_type)
        moved += n
    return moved


class CoordinationThread(DutyThread):
    """Runs in every worker's main process: cluster-leader duties while it holds the lease, and
    group dispatch when this worker is a ``hierarchical`` group leader."""

    def __init__(self, app, cfg: Config, worker_id: str, metadata: dict | None = None):
        super().__init__("sentinel-coordination")
        self.app = app
        self.cfg = cfg
        self.worker_id = worker_id
        self.metadata = metadata or {}
        self.pattern = cfg.get("distributed.coordination.pattern")
        self.lease = None
        self._due: dict[str, float] = {}
        self.ttl = max(cfg.get("distributed.heartbeat.staleThresholdMs") / 1000.0, 1.0)
        self.dispatch_every = cfg.get("distributed.coordination.dispatchIntervalMs") / 1000.0
        self.group_dispatcher = None
        if self.pattern == "hierarchical" and is_group_leader(self.metadata):
            group = group_of({"metadata": self.metadata})
            self.group_dispatcher = Dispatcher(app, cfg, assigner=worker_id,
                                               only=lambda w: group_of(w) == group)
        self.master_dispatcher = Dispatcher(app, cfg, assigner=worker_id) if self.pattern == "master_worker" else None
        self.autoscaler = None

    @property
    def is_leader(self) -> bool:
        return self.lease is not None and not self.lease.lost

    def _every(self, name: str, seconds: float) -> bool:
        now = time.monotonic()
        if now >= self._due.get(name, 0.0):
            self._due[name] = now + seconds
            return True
        return False

    def run(self) -> None:
        tick = min(self.dispatch_every, 1.0) if (self.master_dispatcher or self.group_dispatcher) else 0.5
        while not self.stopping.wait(tick):
            run_step(self.step, "coordination")
        self.release()

    def step(self) -> None:
        if not self.is_leader and self._every("elect", min(self.ttl / 3.0, 1.0)):
            self._try_lead()
        if self.group_dispatcher is not None and self._every("group", self.dispatch_every):
            self.group_dispatcher.dispatch_once()
        if not self.is_leader:
            return
        if self.master_dispatcher is not None and self._every("dispatch", self.dispatch_every):
            self.master_dispatcher.dispatch_once()
        if self._every("rebalance", self.cfg.get("distributed.loadBalancer.rebalanceIntervalMs") / 1000.0):
            rebalance(self.app, self.cfg)
            if self.pattern == "hierarchical":
                leaderless_fallback(self.app, self.cfg, self._online_workers())
        if self.cfg.get("distributed.autoscale.enabled") and \
                self._every("autoscale", self.cfg.get("distributed.autoscale.intervalMs") / 1000.0):
            if self.autoscaler is None:
                self.autoscaler = AutoscaleDuty(self.app, self.cfg, owner=self.worker_id)
            self.autoscaler.step()

    def _online_workers(self) -> list[WorkerInfo]:
        return get_registry(self.cfg).workers(include_offline=False)

    def _try_lead(self) -> None:
        backend = get_backend()
        if backend.client.exists(backend.key(LEADER_LEASE)):
            return  # held: do not count a conflict in the lease stats every second
        try:
            self.lease = try_acquire(LEADER_LEASE, self.ttl, worker=self.worker_id)
            logger.info("sentinel: %s is the cluster leader (lease %s, token %s)",
                        self.worker_id, LEADER_LEASE, self.lease.token)
            self._due.clear()
        except LockContended:
            self.lease = None

    def release(self) -> None:
        if self.autoscaler is not None:
            self.autoscaler.release()
        release_quietly(self.lease)
        self.lease = None


def start_worker_duties(runtime) -> None:
    """``WorkerRuntime.on_start`` hook."""
    thread = CoordinationThread(runtime.worker.app, runtime.cfg, runtime.worker_id,
                                runtime.cfg.worker.get("metadata"))
    runtime.coordination = thread
    thread.start()


def stop_worker_duties(runtime) -> None:
    """``WorkerRuntime.on_stop`` hook."""
    thread = getattr(runtime, "coordination", None)
    if thread is not None:
        thread.stop()


def connect_coordination() -> None:
    """Run :class:`CoordinationThread` in every Sentinel worker (idempotent)."""
    if start_worker_duties not in WorkerRuntime.on_start:
        WorkerRuntime.on_start.append(start_worker_duties)
    if stop_worker_duties not in WorkerRuntime.on_stop:
        WorkerRuntime.on_stop.append(stop_worker_duties)
