"""Load balancing: which worker a task goes to, by strategy, through that worker's direct queue.

Every worker also consumes its own *direct queue* (:func:`direct_queue_name`). The client-side
:class:`Balancer` is the ``placement`` hook of :class:`~sentinel_celery.routing.TaskRouter`: it picks
a worker by ``distributed.loadBalancer.strategy`` (or a per-call ``balance=`` option) and routes the
task to that worker's direct queue; with ``pull``, or when no worker qualifies, the task stays on its
type queue where any worker of the type takes it. A task is therefore never routed to a queue nobody
consumes, and what waits in a direct queue of a worker that went away is moved back by
:func:`sentinel_celery.cluster.rebalance.rebalance`.

A worker qualifies when it is online, consumes the task's type queue and its own direct queue, and
has a free slot: ``concurrency - (tasks it holds + tasks waiting in its direct queue + tasks this
process placed on it since it last looked)``. The online list and the queue depths are read once per
heartbeat interval and cached in the process (:class:`LoadView`); placements made since count
locally, so a burst from one client spreads instead of piling onto one worker.

Strategies (``distributed.loadBalancer.options``):
  round_robin     qualifying workers in id order, from ``startIndex``, one cluster-wide cursor per type
  least_loaded    fewest outstanding tasks; with ``considerCapacity``: lowest outstanding ÷ slots
  capacity_based  most free slots, × cpuCores with ``weightByCpu``, × memoryMb with ``weightByMemory``
  affinity        the worker that last took the task's ``affinityKey`` value (from its kwargs, or a
                  per-call ``affinity=``) while it qualifies; else ``fallbackStrategy``. A full
                  preferred worker keeps the key; an offline one loses it to the new choice.

Redis keys (under the namespace):
  balancer:rr:<type>                 counter: the round-robin cursor
  balancer:affinity:<type>:<value>   string: worker id, EX affinityTtlSeconds
  balancer:placements                hash: worker id (or "_type_queue") -> tasks placed
  balancer:direct-queues             set: worker ids that have a direct queue (for the rebalancer)
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import redis

from sentinel_celery.broker.base import Broker
from sentinel_celery.broker.factory import broker_for
from sentinel_celery.config import STRATEGIES, Config
from sentinel_celery.routing import (
    HOME_PROPERTY,
    coordinator_queue_name,
    coordinator_route,
    direct_queue,
    direct_queue_name,
)
from sentinel_celery.state.connection import get_redis, server_time_ms
from sentinel_celery.state.registry import ONLINE, RedisRegistry, WorkerInfo

TYPE_QUEUE = "_type_queue"


@dataclass
class Candidate:
    """A worker that may take a task, with the load the balancer believes it has."""

    id: str
    slots: int
    outstanding: int
    cpu: int = 1
    memory_mb: int = 1
    info: WorkerInfo | None = field(default=None, repr=False)

    @property
    def free(self) -> int:
        return max(self.slots - self.outstanding, 0)

    @property
    def ratio(self) -> float:
        return self.outstanding / self.slots if self.slots else 1.0


class LoadView:
    """Online workers and their load, read at most once per ``ttl`` seconds, plus placements since.

    A worker's outstanding tasks = what it held at its last heartbeat + max(tasks waiting in its
    direct queue, tasks placed on it since that heartbeat) + tasks placed since this view was read.
    The max() covers both a slow worker (still waiting in the queue) and a fast one (already
    fetched, not yet reported).
    """

    def __init__(self, registry: RedisRegistry, broker: Broker, ttl: float):
        self.registry = registry
        self.broker = broker
        self.ttl = ttl
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._workers: list[WorkerInfo] = []
        self._base: dict[str, int] = {}
        self._placed: dict[str, int] = {}
        self._recent: dict[str, deque] = {}  # worker -> server-clock ms of our recent placements
        self._clock_offset = 0.0

    def refresh(self) -> None:
        now = server_time_ms(self.registry.client)
        local = time.time() * 1000
        workers = [w for w in self.registry.workers(include_offline=False) if w.status == ONLINE]
        direct = [direct_queue_name(w.id) for w in workers]
        depths = self.broker.depths(direct) if direct else {}
        with self._lock:
            self._clock_offset = now - local
            base = {}
            for w in workers:
                last_beat = now - w.age_ms
                recent = self._recent.get(w.id)
                while recent and recent[0] <= last_beat:
                    recent.popleft()
                held = max(w.active, int(w["reserved"] or 0))
                base[w.id] = held + max(depths.get(direct_queue_name(w.id), 0), len(recent or ()))
            self._recent = {wid: q for wid, q in self._recent.items() if wid in base}
            self._workers, self._base, self._placed = workers, base, {}
            self._read_at = time.monotonic()

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._read_at >= self.ttl:
            self.refresh()

    def invalidate(self) -> None:
        self._read_at = float("-inf")

    def workers(self) -> list[WorkerInfo]:
        self._maybe_refresh()
        return list(self._workers)

    def candidates(self, task_type: str, *, only: Callable[[WorkerInfo], bool] | None = None,
                   free_only: bool = True) -> list[Candidate]:
        """Online workers consuming ``task_type`` and their direct queue (with a free slot)."""
        self._maybe_refresh()
        out = []
        with self._lock:
            for w in self._workers:
                queues = w["queues"] or []
                if task_type not in queues or direct_queue_name(w.id) not in queues:
                    continue
                if only is not None and not only(w):
                    continue
                cap = w.capacity
                c = Candidate(w.id, w.max_tasks, self._base.get(w.id, 0) + self._placed.get(w.id, 0),
                              int(cap.get("cpuCores") or 1), int(cap.get("memoryMb") or 1), w)
                if c.free > 0 or not free_only:
                    out.append(c)
        return out

    def placed(self, worker_id: str) -> None:
        with self._lock:
            self._placed[worker_id] = self._placed.get(worker_id, 0) + 1
            self._recent.setdefault(worker_id, deque()).append(time.time() * 1000 + self._clock_offset)


# -- strategies: (qualifying candidates, context) -> the chosen one ---------------------------------
@dataclass
class Context:
    task_type: str
    options: dict
    next_cursor: Callable[[], int]


def round_robin(cands: list[Candidate], ctx: Context) -> Candidate:
    ordered = sorted(cands, key=lambda c: c.id)
    return ordered[(ctx.next_cursor() + int(ctx.options.get("startIndex", 0))) % len(ordered)]


def least_loaded(cands: list[Candidate], ctx: Context) -> Candidate:
    if ctx.options.get("considerCapacity", True):
        return min(cands, key=lambda c: (c.ratio, -c.free, c.id))
    return min(cands, key=lambda c: (c.outstanding, -c.free, c.id))


def capacity_based(cands: list[Candidate], ctx: Context) -> Candidate:
    def score(c: Candidate) -> float:
        s = float(c.free)
        if ctx.options.get("weightByCpu"):
            s *= c.cpu
        if ctx.options.get("weightByMemory"):
            s *= c.memory_mb
        return s
    return min(cands, key=lambda c: (-score(c), c.ratio, c.id))


PICKERS: dict[str, Callable[[list[Candidate], Context], Candidate]] = {
    "round_robin": round_robin,
    "least_loaded": least_loaded,
    "capacity_based": capacity_based,
}


class Balancer:
    """The router's ``placement`` hook; see the module docstring."""

    def __init__(self, app, cfg: Config, *, view: LoadView | None = None):
        self.app = app
        self.cfg = cfg
        self._view = view
        self._client: redis.Redis | None = None

    # lazily: a client that never balances never touches Redis here
    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = get_redis(self.cfg.redis_url)
        return self._client

    @property
    def view(self) -> LoadView:
        if self._view is None:
            registry = RedisRegistry(self.client, self.cfg.namespace,
                                     self.cfg.get("distributed.heartbeat.staleThresholdMs"))
            self._view = LoadView(registry, broker_for(self.app),
                                  self.cfg.get("distributed.heartbeat.intervalMs") / 1000.0)
        return self._view

    @property
    def options(self) -> dict:
        return self.cfg.get("distributed.loadBalancer.options")

    def key(self, suffix: str) -> str:
        return f"{self.cfg.namespace}balancer:{suffix}"

    def __call__(self, name: str, task_type: str, args, kwargs, options: dict) -> dict | None:
        requested = options.pop("balance", None)
        explicit_affinity = options.pop("affinity", None)
        strategy = requested or self.cfg.get("distributed.loadBalancer.strategy")
        if strategy not in STRATEGIES:
            raise ValueError(f"balance={strategy!r} is not a load-balancing strategy; "
                             f"valid: {', '.join(STRATEGIES)}")
        pattern = self.cfg.get("distributed.coordination.pattern")
        if pattern != "peer_to_peer" and requested is None:
            return coordinator_route(task_type)
        affinity = self.affinity_value(kwargs, explicit_affinity) if (
            strategy == "affinity" or self.cfg.get("distributed.loadBalancer.affinityEnabled")) else None
        if strategy == "pull" and affinity is None:
            return None
        chosen = self.choose(task_type, strategy, affinity=affinity)
        self._count(chosen.id if chosen else TYPE_QUEUE)
        if chosen is None:
            return None
        return {"queue": direct_queue(chosen.id), "routing_key": direct_queue_name(chosen.id),
                HOME_PROPERTY: task_type}

    def affinity_value(self, kwargs, explicit=None) -> str | None:
        """The task's affinity value: a per-call ``affinity=``, else ``kwargs[affinityKey]``."""
        if explicit is not None:
            return str(explicit)
        value = (kwargs or {}).get(self.options.get("affinityKey") or "")
        return None if value is None else str(value)

    def choose(self, task_type: str, strategy: str, *, affinity: str | None = None,
               only: Callable[[WorkerInfo], bool] | None = None) -> Candidate | None:
        """The worker for one task, or None to leave it on its type queue; records the placement."""
        view = self.view
        cands = view.candidates(task_type, only=only)
        chosen = None
        if affinity is not None:
            chosen = self._affinity_choice(task_type, affinity, cands, strategy, only)
        elif cands:
            chosen = self._pick(strategy, cands, task_type)
        if chosen is not None:
            view.placed(chosen.id)
        return chosen

    def _pick(self, strategy: str, cands: list[Candidate], task_type: str) -> Candidate | None:
        if strategy in ("affinity", "pull"):
            strategy = self.options.get("fallbackStrategy") or "least_loaded"
            if strategy in ("affinity", "pull"):
                return None
        ctx = Context(task_type, self.options, lambda: self.client.incr(self.key(f"rr:{task_type}")) - 1)
        return PICKERS[strategy](cands, ctx)

    def _affinity_choice(self, task_type: str, value: str, cands: list[Candidate], strategy: str,
                         only) -> Candidate | None:
        key = self.key(f"affinity:{task_type}:{value}")
        ttl = int(self.options.get("affinityTtlSeconds") or 3600)
        preferred = self.client.get(key)
        by_id = {c.id: c for c in cands}
        if preferred in by_id:
            self.client.expire(key, ttl)
            return by_id[preferred]
        if preferred is not None and self._still_online(task_type, preferred, only):
            # full now, but keeps the key: the next task for it goes back there when it has room
            return self._pick(strategy, cands, task_type) if cands else None
        chosen = self._pick(strategy, cands, task_type) if cands else None
        if chosen is not None:
            self.client.set(key, chosen.id, ex=ttl)
        return chosen

    def _still_online(self, task_type: str, worker_id: str, only) -> bool:
        return any(c.id == worker_id for c in self.view.candidates(task_type, only=only, free_only=False))

    def _count(self, field_name: str) -> None:
        try:
            self.client.hincrby(self.key("placements"), field_name, 1)
        except redis.RedisError:
            pass

    def placements(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.client.hgetall(self.key("placements")).items()}


def load_distribution(app, cfg: Config) -> dict:
    """How work is spread now: per worker (slots, running, held, waiting in its direct queue,
    utilization, processed, placements) and per type (type and coordinator queue depth)."""
    client = get_redis(cfg.redis_url)
    registry = RedisRegistry(client, cfg.namespace, cfg.get("distributed.heartbeat.staleThresholdMs"))
    broker = broker_for(app)
    live = registry.workers(include_offline=False)
    types = cfg.task_types
    depths = broker.depths([*(direct_queue_name(w.id) for w in live), *types,
                            *(coordinator_queue_name(t) for t in types)])
    placed = {k: int(v) for k, v in client.hgetall(f"{cfg.namespace}balancer:placements").items()}
    processed_total = sum(int(w["processed"] or 0) for w in live) or 1
    rows = []
    for w in sorted(live, key=lambda w: w.id):
        processed = int(w["processed"] or 0)
        rows.append({"id": w.id, "status": w.status, "slots": w.max_tasks, "running": w.active,
                     "held": max(w.active, int(w["reserved"] or 0)), "waiting": depths[direct_queue_name(w.id)],
                     "utilization": round(w.utilization, 3), "processed": processed,
                     "share": round(processed / processed_total, 3), "placed": placed.get(w.id, 0)})
    utils = [r["utilization"] for r in rows if r["status"] == ONLINE]
    mean = sum(utils) / len(utils) if utils else 0.0
    stdev = (sum((u - mean) ** 2 for u in utils) / len(utils)) ** 0.5 if utils else 0.0
    return {
        "strategy": cfg.get("distributed.loadBalancer.strategy"),
        "pattern": cfg.get("distributed.coordination.pattern"),
        "workers": rows,
        "queues": [{"type": t, "waiting": depths[t], "coordinator": depths[coordinator_queue_name(t)]}
                   for t in types],
        "placed_on_type_queue": placed.get(TYPE_QUEUE, 0),
        "utilization": {"mean": round(mean, 3), "min": min(utils, default=0.0), "max": max(utils, default=0.0),
                        "stdev": round(stdev, 3)},
    }
