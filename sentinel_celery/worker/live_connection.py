"""The worker's liveness connection (state/live_connections.py): opened when the worker registers, moved to
each new incarnation, closed at a clean stop — when ``failover.connectionWatch`` is on.

Redis keys: state/live_connections.py's.
"""
from __future__ import annotations

import logging
import os
import socket

import redis

from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.live_connections import LivenessConnection
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

_open: dict[int, LivenessConnection] = {}  # id(runtime) -> its connection


def _start(runtime: WorkerRuntime) -> None:
    if not runtime.cfg.get("distributed.failover.connectionWatch"):
        return
    conn = LivenessConnection(get_redis(runtime.cfg.redis_url), runtime.cfg.namespace, runtime.worker_id,
                              runtime.instance, runtime.cfg.worker["hostname"] or socket.gethostname(), os.getpid())
    try:
        conn.start()
    except redis.RedisError as exc:  # the heartbeat still covers this worker
        logger.warning("sentinel: no liveness connection (%s); failover relies on the heartbeat alone", exc)
        return
    _open[id(runtime)] = conn


def _follow_incarnation(runtime: WorkerRuntime) -> None:
    conn = _open.get(id(runtime))
    if conn is not None and conn.instance != runtime.instance:
        conn.rename(runtime.instance)


def _stop(runtime: WorkerRuntime) -> None:
    conn = _open.pop(id(runtime), None)
    if conn is not None:
        conn.stop()


def connect_liveness() -> None:
    """Keep a liveness connection in each Sentinel worker this process starts. Idempotent."""
    for hooks, hook in ((WorkerRuntime.on_start, _start), (WorkerRuntime.on_beat, _follow_incarnation),
                        (WorkerRuntime.on_stop, _stop)):
        if hook not in hooks:
            hooks.append(hook)
