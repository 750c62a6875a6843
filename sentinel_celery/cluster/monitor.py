"""The failover monitor: every worker runs one, only the holder of the monitor lease acts.

The lease (``sentinel:failover-monitor``) has a TTL of two thirds of the stale threshold and is
renewed in the background, so when the leader dies another worker's monitor takes over within
the stale threshold. Before each pass the leader renews synchronously if the background renewal
is late (it may just have been paused), and a leader that lost its lease stops acting at once.
``sentinel monitor`` runs the same loop as a standalone process. Alongside, a connection watch
(connection_watch.py) fails over a worker whose process is gone in about a second.

:func:`connect_monitor` runs a monitor thread in every Sentinel worker (the worker layer's own
failover pieces, delivery-tag tracking and stale-execution fencing, live in worker/).

Redis keys: the ``sentinel:failover-monitor`` lease (see state/leases.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable

import redis

from sentinel_celery.cluster.connection_watch import start_watch
from sentinel_celery.cluster.failover import Failover
from sentinel_celery.config import Config
from sentinel_celery.state.leases import Lease, LockContended, release_quietly, try_acquire
from sentinel_celery.worker.duty import DutyThread, run_step
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

LEASE_NAME = "sentinel:failover-monitor"
#: how long a stopping monitor waits for the connection watch to finish a failover it has begun
WATCH_STOP_S = 10.0


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
        try:
            self.failover.grace.answered()
            return self._step()
        except (redis.ConnectionError, redis.TimeoutError):
            self.failover.grace.failed()  # every monitor notes it, leader or not: any may lead when Redis is back
            raise

    def _step(self) -> list[dict]:
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
            # we were paused past our lease, or Redis is away (then this raises, and the grace knows)
            self.failover.client.ping()
            return []
        events = self.failover.check()
        for event in events:
            if self.on_event is not None:
                self.on_event(event)
        return events

    def leader(self) -> str | None:
        """The worker id of whoever holds the monitor lease now."""
        return self.failover.client.hget(self.failover.leases.key(LEASE_NAME), "worker")

    def run(self, stopping: threading.Event) -> None:
        # dead processes are seen by their closed Redis connection (connection_watch.py), in its own thread
        watch = start_watch(self.failover, self.cfg, stopping, is_leader=lambda: self.is_leader, leader=self.leader,
                            on_event=self.on_event)
        while not stopping.is_set():
            run_step(self.step, "failover monitor")
            stopping.wait(self.tick)
        if watch is not None:
            watch.join(WATCH_STOP_S)  # a failover the watch has begun is recorded before the monitor lets go
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


# -- in a worker ---------------------------------------------------------------------------------
def _start(runtime: WorkerRuntime) -> None:
    thread = MonitorThread(Monitor(runtime.worker.app, runtime.cfg, worker_id=runtime.worker_id))
    runtime.failover_monitor = thread
    thread.start()


def _stop(runtime: WorkerRuntime) -> None:
    """Hand the monitor over at once."""
    thread = getattr(runtime, "failover_monitor", None)
    if thread is not None:
        thread.stop()


def connect_monitor() -> None:
    """Run a monitor thread in each Sentinel worker this process starts. Idempotent."""
    for hooks, hook in ((WorkerRuntime.on_start, _start), (WorkerRuntime.on_stop, _stop)):
        if hook not in hooks:
            hooks.append(hook)
