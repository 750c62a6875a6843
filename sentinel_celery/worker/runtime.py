"""This worker process's identity in the cluster, and its heartbeat.

:class:`WorkerRuntime` registers the worker (a new *incarnation* each start), beats every
``heartbeat.intervalMs`` with its load from a thread of the worker's main process, and deregisters at
shutdown. Other worker-side pieces (tag tracking, the duties of cluster/ and github/) attach through
its hook lists (``on_start``, ``on_beat``, ``on_fenced``, ``on_stop``) instead of being imported here,
so this layer does not know the layers above it.

Redis keys: the registry's (see state/registry.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

import redis
from celery.worker import state as worker_state

from sentinel_celery.config import Config
from sentinel_celery.state.leases import RedisLeaseBackend
from sentinel_celery.state.marker import ClusterMarker
from sentinel_celery.state.registry import STOPPING, WorkerIdInUse, get_registry
from sentinel_celery.worker.liveness import incarnation_gone

logger = logging.getLogger(__name__)


class WorkerRuntime:
    """This worker process's identity in the cluster and its heartbeat thread."""

    #: callables(runtime) run after registration; later subsystems (monitor, mirror) hook in here
    on_start: list[Callable[["WorkerRuntime"], None]] = []
    #: callables(runtime) run when a beat is refused (this incarnation was declared dead)
    on_fenced: list[Callable[["WorkerRuntime"], None]] = []
    #: callables(runtime) run at deregistration
    on_stop: list[Callable[["WorkerRuntime"], None]] = []
    #: callables(runtime) run after each accepted beat, in the heartbeat thread
    on_beat: list[Callable[["WorkerRuntime"], None]] = []

    current: "WorkerRuntime | None" = None

    def __init__(self, worker, cfg: Config):
        self.worker = worker
        self.cfg = cfg
        self.worker_id = cfg.worker_id
        self.nodename = worker.hostname
        self.instance = uuid.uuid4().hex
        self.registry = get_registry(cfg)
        self.leases = RedisLeaseBackend(self.registry.client, cfg.namespace)
        self.marker = ClusterMarker(self.registry.client, cfg.namespace)
        self.interval = cfg.get("distributed.heartbeat.intervalMs") / 1000.0
        self.incarnation = 0
        self.stopped = threading.Event()
        #: set at a warm shutdown's start: the pool is finishing, nothing new is taken
        self.stopping = False
        self._thread: threading.Thread | None = None
        self.beats = 0
        #: monotonic time just before sending the last beat Redis accepted: the registry cannot
        #: have declared this incarnation dead before ``beat_sent_at + staleThresholdMs``
        self.beat_sent_at = time.monotonic()

    def queues(self) -> list[str]:
        q = self.worker.app.amqp.queues
        return sorted((q.consume_from or q).keys())

    def registration(self) -> dict:
        cap = dict(self.cfg.worker["capacity"])
        cap["supportedTaskTypes"] = cap.get("supportedTaskTypes") or self.cfg.task_types
        return {
            "nodename": self.nodename,
            "hostname": self.cfg.worker["hostname"] or socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues(),
            "capacity": cap,
            "metadata": self.cfg.worker["metadata"],
            "concurrency": self.concurrency(),
            "started": int(time.time() * 1000),
        }

    def concurrency(self) -> int:
        pool = getattr(self.worker, "pool", None)
        return int(getattr(pool, "limit", None) or self.worker.concurrency or 1)

    def load(self) -> dict:
        return {
            "active": len(worker_state.active_requests),
            "reserved": len(worker_state.reserved_requests),
            "processed": worker_state.all_total_count[0],
            "concurrency": self.concurrency(),
        }

    def register(self) -> None:
        self.marker.ensure()
        fields = self.registration()
        try:
            reg = self.registry.register_incarnation(self.worker_id, self.instance, fields)
        except WorkerIdInUse as exc:
            if not incarnation_gone(exc.hostname, exc.pid, exc.started, this_host=fields["hostname"]):
                raise
            logger.warning("sentinel: worker id %s is still registered to an earlier incarnation (pid %s on %s) whose "
                           "process is gone; taking the id over", self.worker_id, exc.pid, exc.hostname)
            reg = self.registry.register_incarnation(
                self.worker_id, self.instance, fields, replace=exc.instance,
                reason=f"restarted under the same worker id: the earlier incarnation's process (pid {exc.pid} on "
                       f"{exc.hostname}) is gone")
        self.incarnation = reg.incarnation
        logger.info("sentinel: registered worker %s (incarnation %s, queues %s)",
                    self.worker_id, self.incarnation, ",".join(self.queues()))
        if reg.replaced:
            # Nothing of this incarnation holds a lease yet: every lease under this worker id is the earlier one's.
            fenced = self.leases.fence_worker(self.worker_id)
            logger.warning("sentinel: worker %s restarted without deregistering its earlier incarnation; failover "
                           "gives back the tasks it held%s", self.worker_id,
                           f" (its leases are fenced: {', '.join(fenced)})" if fenced else "")

    def start(self) -> None:
        self.register()
        WorkerRuntime.current = self
        self._thread = threading.Thread(target=self._beat_loop, name="sentinel-heartbeat", daemon=True)
        self._thread.start()
        for hook in list(self.on_start):
            hook(self)

    def beat_once(self) -> bool:
        sent_at = time.monotonic()
        ok = self.registry.beat(self.worker_id, self.instance, self.load())
        self.beats += 1
        if ok:
            self.beat_sent_at = sent_at
            for hook in list(self.on_beat):
                try:
                    hook(self)
                except Exception:
                    logger.exception("sentinel: beat hook failed")
        if not ok and not self.stopped.is_set():
            loss = self.marker.lost(by=self.worker_id)
            if loss is not None:
                # Not a failover: nobody declared this worker dead or gave its tasks to anyone.
                logger.error("sentinel: %s. This worker's registration, leases and held messages were lost with it; "
                             "re-registering (sentinel cluster health is critical until `sentinel cluster "
                             "clear-data-loss`)", loss.summary)
            else:
                logger.warning("sentinel: worker %s incarnation %s was declared dead; re-registering",
                               self.worker_id, self.incarnation)
                for hook in list(self.on_fenced):
                    hook(self)
            self.instance = uuid.uuid4().hex
            self.register()
        return ok

    def _beat_loop(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat_once()
            except redis.RedisError as exc:
                logger.warning("sentinel: heartbeat failed: %s", exc)
            except Exception:
                logger.exception("sentinel: heartbeat error")

    def mark_stopping(self) -> None:
        self.stopping = True
        try:
            self.registry.set_state(self.worker_id, STOPPING)
        except redis.RedisError:
            pass

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        for hook in list(self.on_stop):
            try:
                hook(self)
            except Exception:
                logger.exception("sentinel: stop hook failed")
        try:
            self.registry.deregister(self.worker_id, self.instance)
            logger.info("sentinel: deregistered worker %s", self.worker_id)
        except redis.RedisError as exc:
            logger.warning("sentinel: could not deregister: %s", exc)
        if WorkerRuntime.current is self:
            WorkerRuntime.current = None
