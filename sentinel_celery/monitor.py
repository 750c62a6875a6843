"""The failover monitor: every worker runs one, only the holder of the monitor lease acts.

The lease (``sentinel:failover-monitor``) has a TTL of two thirds of the stale threshold and is
renewed in the background, so when the leader dies another worker's monitor takes over within
the stale threshold. Before each pass the leader renews synchronously if the background renewal
is late (it may just have been paused), and a leader that lost its lease stops acting at once.
``sentinel monitor`` runs the same loop as a standalone process.

This module also attaches failover's duties to a worker (``connect_worker_duties``): the
monitor thread, delivery-tag tracking (tracking.py) and stale-execution fencing (fencing.py).

Redis keys: the ``sentinel:failover-monitor`` lease (see leases.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

from celery import signals

from .bootsteps import WorkerRuntime
from .config import Config
from .failover import Failover
from .fencing import guard_result_backend, stamp_request
from .duty import DutyThread, run_step
from .leases import Lease, LockContended, try_acquire, release_quietly

logger = logging.getLogger(__name__)

LEASE_NAME = "sentinel:failover-monitor"


class Monitor:
    """Detection and recovery, done by whoever holds the monitor lease."""

    def __init__(self, app, cfg: Config, *, worker_id: str = "", failover: Failover | None = None,
                 on_event: Callable[[dict], None] | None = None):
        self.cfg = cfg
        self.worker_id = worker_id
        self.actor = worker_id or f"monitor@{socket.gethostname()}:{os.getpid()}"
        self.failover = failover or Failover(app, cfg, actor=self.actor)
        self.on_event = on_event
        stale = cfg.get("distributed.heartbeat.staleThresholdMs") / 1000.0
        interval = cfg.get("distributed.heartbeat.intervalMs") / 1000.0
        self.tick = min(max(interval / 2.0, 0.05), 1.0)
        self.ttl = max(stale * 2.0 / 3.0, 3 * self.tick)
        self.lease: Lease | None = None

    @property
    def is_leader(self) -> bool:
        return self.lease is not None and not self.lease.lost

    def step(self) -> list[dict]:
        """One tick: take or keep the lease; if ours, one failover pass. Returns its events."""
        if not self.is_leader:
            self.lease = None
            if self.failover.client.exists(self.failover.leases.key(LEASE_NAME)):
                return []  # a leader is in place: do not count a contention every tick
            try:
                self.lease = try_acquire(LEASE_NAME, self.ttl, worker=self.worker_id, backend=self.failover.leases)
            except LockContended:
                return []
            logger.info("sentinel: %s now runs the failover monitor (token %s)", self.actor, self.lease.token)
        if time.monotonic() - self.lease.renewed_at > self.ttl / 2.0 and not self.lease.renew():
            return []  # we were paused past our lease: someone else may be acting now
        events = self.failover.check()
        for event in events:
            if self.on_event is not None:
                self.on_event(event)
        return events

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            run_step(self.step, "failover monitor")
            stopping.wait(self.tick)
        self.release()

    def release(self) -> None:
        release_quietly(self.lease)
        self.lease = None


class MonitorThread(DutyThread):
    def __init__(self, monitor: Monitor):
        super().__init__("sentinel-failover-monitor")
        self.monitor = monitor

    def run(self) -> None:
        self.monitor.run(self.stopping)


# -- a worker's failover duties -----------------------------------------------------------------
def start_worker_duties(runtime) -> None:
    """``WorkerRuntime.on_start`` hook: tag tracking, fencing stamps, the monitor thread."""
    from .connection import get_redis
    from .tracking import RedisTagTracker, WorkerTags
    cfg = runtime.cfg
    tracker = RedisTagTracker(get_redis(cfg.redis_url), cfg.namespace)
    runtime.failover_tags = WorkerTags(runtime, tracker, cfg.get("distributed.failover.offlineRetentionSeconds"))
    thread = MonitorThread(Monitor(runtime.worker.app, cfg, worker_id=runtime.worker_id))
    runtime.failover_monitor = thread
    thread.start()


def stop_worker_duties(runtime) -> None:
    """``WorkerRuntime.on_stop`` hook: hand the monitor over at once, forget the tags."""
    thread = getattr(runtime, "failover_monitor", None)
    if thread is not None:
        thread.stop()
    tags = getattr(runtime, "failover_tags", None)
    if tags is not None:
        tags.on_stop(runtime)


def _on_beat(runtime) -> None:
    tags = getattr(runtime, "failover_tags", None)
    if tags is not None:
        tags.on_beat(runtime)


def _on_fenced(runtime) -> None:
    from celery.worker import state as worker_state
    logger.warning("sentinel: worker %s was declared dead while holding %d running and %d waiting task(s); "
                   "their leases are fenced and their messages were given to other workers, so they will not "
                   "start or store an outcome here", runtime.worker_id, len(worker_state.active_requests),
                   len(worker_state.reserved_requests))


def _on_task_received(sender=None, request=None, **kwargs) -> None:
    runtime = WorkerRuntime.current
    if runtime is None or request is None:
        return
    stamp_request(request, runtime.beat_sent_at)
    tags = getattr(runtime, "failover_tags", None)
    if tags is not None:
        tags.on_task_received(sender, request)


def connect_worker_duties(app) -> None:
    """Attach failover to the Sentinel workers of ``app`` started by this process. Idempotent."""
    for hooks, hook in ((WorkerRuntime.on_start, start_worker_duties), (WorkerRuntime.on_stop, stop_worker_duties),
                        (WorkerRuntime.on_beat, _on_beat), (WorkerRuntime.on_fenced, _on_fenced)):
        if hook not in hooks:
            hooks.append(hook)
    signals.task_received.connect(_on_task_received, weak=False, dispatch_uid="sentinel-failover-received")

    def on_process_init(sender=None, **kwargs):  # each pool child, after fork
        guard_result_backend(app.backend, app)

    signals.worker_process_init.connect(on_process_init, weak=False,
                                        dispatch_uid=f"sentinel-failover-process-init-{id(app)}")
