"""Stale executions: a worker declared dead that comes back must not finish work handed to another.

A worker that was only paused (SIGSTOP, a frozen VM, a long GC) resumes with executions whose
messages failover has meanwhile given to other workers. Its leases are already fenced (renewal is
refused, ``lease.lost``), its acks and rejects are no-ops (the messages were restored under new
delivery tags, see broker/redis_unacked.py), and its heartbeat is refused, so it re-registers as a new
incarnation. What is left is the pool child, which would still run a prefetched message and store
a result over the re-run's. So:

* the main process stamps each request of an ``acks_late`` task, as it receives it, with the
  monotonic time just before the worker's last accepted heartbeat (request key ``sentinel_fence``);
* in the pool child, before a task starts (``SentinelTask.before_start``) and before any task's
  result is stored (the result backend's ``store_result``), an execution older than that stamp plus
  ``staleThresholdMs`` minus one heartbeat interval asks the broker whether its message is still
  unacknowledged under its delivery tag. If not, failover gave it to another worker: the task does
  not start (``Ignore``) or its outcome is not stored.

Younger executions skip the check — the registry cannot have declared the worker dead before
``stamp + staleThresholdMs`` — so a healthy worker pays nothing for it.

A message is also gone when Redis lost its data (restarted empty): the cluster marker the request was
received under (state/marker.py) tells the two apart, and then the outcome is kept.

Redis keys: none of its own; reads ``cluster:marker`` and the broker's ``unacked`` hash (see broker/redis_unacked.py).
"""
from __future__ import annotations

import functools
import logging
import os
import time

from celery import signals
from celery.exceptions import Ignore
from celery.worker import state as worker_state

from sentinel_celery.broker.factory import broker_for
from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.marker import current_marker
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

STAMP = "sentinel_fence"
MARKER = "sentinel_marker"  # the cluster marker when the message was received (state/marker.py)

_brokers: dict[int, object] = {}  # per process (pool child): the app's Broker


def stamp_request(request, beat_sent_at: float, marker: str | None = None) -> None:
    """Main process, ``task_received``: remember when this worker was last known to be alive, and which
    incarnation of the cluster's data it received the message from."""
    task = getattr(request, "task", None)
    if task is not None and getattr(task, "acks_late", False):
        request.request_dict[STAMP] = beat_sent_at
        if marker:
            request.request_dict[MARKER] = marker


def _window_s() -> float:
    cfg = get_config()
    stale = cfg.get("distributed.heartbeat.staleThresholdMs") / 1000.0
    interval = cfg.get("distributed.heartbeat.intervalMs") / 1000.0
    return max(stale - interval, stale / 2)


def needs_check(request) -> bool:
    stamp = getattr(request, STAMP, None) if request is not None else None
    if stamp is None:
        return False
    return time.monotonic() - float(stamp) > _window_s()


def still_ours(app, request) -> bool:
    """Whether this execution's message is still the one the broker has us holding."""
    broker = _brokers.get(os.getpid())
    if broker is None:
        broker = _brokers[os.getpid()] = broker_for(app)
    tag = broker.tag_of(request)
    if tag is None:
        return True
    try:
        return broker.exists(tag) or _data_lost_since(request)
    except Exception as exc:  # cannot tell: let it through rather than lose a result
        logger.warning("sentinel: could not check whether task %s is still ours: %s", request.id, exc)
        return True


def _data_lost_since(request) -> bool:
    """The message is gone because Redis lost its data, not because failover gave it to another worker."""
    marker = getattr(request, MARKER, None)
    if not marker:
        return False
    cfg = get_config()
    if current_marker(get_redis(cfg.redis_url), cfg.namespace) == marker:
        return False
    logger.warning("sentinel: task %s: its message is gone because Redis lost its data, not because it was given "
                   "to another worker; its outcome is kept", request.id)
    return True


def check_before_start(task) -> None:
    """``SentinelTask.before_start``: raise ``Ignore`` if the message was handed to another worker."""
    request = task.request
    if needs_check(request) and not still_ours(task.app, request):
        logger.warning("sentinel: not starting task %s[%s]: this worker was declared dead and the task was "
                       "given to another worker", task.name, request.id)
        raise Ignore()


def guard_result_backend(backend, app) -> None:
    """Pool child: skip storing the outcome of an execution whose message was given to another worker."""
    if getattr(backend, "_sentinel_fenced", False):
        return
    original = backend.store_result

    @functools.wraps(original)
    def store_result(task_id, result, state, traceback=None, request=None, **kwargs):
        if needs_check(request) and not still_ours(app, request):
            logger.warning("sentinel: discarding the %s outcome of task %s: this worker was declared dead and "
                           "the task was given to another worker", state, task_id)
            return result
        return original(task_id, result, state, traceback=traceback, request=request, **kwargs)

    backend.store_result = store_result
    backend._sentinel_fenced = True


def _on_task_received(sender=None, request=None, **kwargs) -> None:
    runtime = WorkerRuntime.current
    if runtime is not None and request is not None:
        stamp_request(request, runtime.beat_sent_at, runtime.marker.known)


def _on_fenced(runtime: WorkerRuntime) -> None:
    logger.warning("sentinel: worker %s was declared dead while holding %d running and %d waiting task(s); "
                   "their leases are fenced and their messages were given to other workers, so they will not "
                   "start or store an outcome here", runtime.worker_id, len(worker_state.active_requests),
                   len(worker_state.reserved_requests))


def connect_fencing(app) -> None:
    """Stamp what the workers of this process receive; guard ``app``'s result backend in pool children."""
    if _on_fenced not in WorkerRuntime.on_fenced:
        WorkerRuntime.on_fenced.append(_on_fenced)
    signals.task_received.connect(_on_task_received, weak=False, dispatch_uid="sentinel-fencing-received")

    def on_process_init(sender=None, **kwargs):  # each pool child, after fork
        guard_result_backend(app.backend, app)

    signals.worker_process_init.connect(on_process_init, weak=False,
                                        dispatch_uid=f"sentinel-fencing-process-init-{id(app)}")
