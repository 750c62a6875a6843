"""The task signals that feed the task statistics (state/taskstats.py).

  before_task_publish   the client stamps ``sentinel_sent`` (its wall clock) into the message headers
  task_prerun           the pool child records the schedule-to-start latency of its queue
  task_postrun          the pool child counts the outcome
  worker_(process_)shutdown   flush what is buffered
"""
from __future__ import annotations

import time
from datetime import datetime

from celery import signals

from sentinel_celery.state.taskstats import SENT_HEADER, buffer, flush_quietly


def _on_before_publish(sender=None, headers=None, **kwargs):
    if headers is not None:
        headers[SENT_HEADER] = time.time()  # a retry republishes: it waits again from now


def _eta_seconds(eta) -> float | None:
    if not eta:
        return None
    try:
        return datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


def _on_prerun(sender=None, task=None, **kwargs):
    request = getattr(task, "request", None)
    sent = getattr(request, SENT_HEADER, None) if request is not None else None
    if not sent:
        return
    try:
        start_from = float(sent)
        eta = _eta_seconds(getattr(request, "eta", None))
        if eta is not None and eta > start_from:
            start_from = eta
        queue = (request.delivery_info or {}).get("routing_key") or "unknown"
        buffer().observe_latency(queue, max(time.time() - start_from, 0.0))
    except (TypeError, ValueError):
        pass


def _on_postrun(sender=None, state=None, **kwargs):
    if state:
        buffer().count_outcome(state)


def connect_task_stats() -> None:
    """Connect the handlers once per process (``dispatch_uid``), whatever the number of apps."""
    signals.before_task_publish.connect(_on_before_publish, weak=False, dispatch_uid="sentinel.taskstats.publish")
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="sentinel.taskstats.prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="sentinel.taskstats.postrun")
    signals.worker_process_shutdown.connect(flush_quietly, weak=False,
                                            dispatch_uid="sentinel.taskstats.process_shutdown")
    signals.worker_shutdown.connect(flush_quietly, weak=False, dispatch_uid="sentinel.taskstats.shutdown")
