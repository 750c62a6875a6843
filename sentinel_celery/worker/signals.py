"""The Celery signals a Sentinel worker listens to, outside the bootstep.

  celeryd_init          the worker id defaults to Celery's nodename when ``WORKER_ID`` is not set
  celeryd_after_setup   default queues when started without ``-Q``, plus the worker's direct queue
  worker_shutdown       deregister (the runtime's last act)
  task_failure          count the failure in the worker's registry entry (in the pool child)
"""
from __future__ import annotations

import redis
from celery import signals

from sentinel_celery.config import Config, get_config
from sentinel_celery.state.registry import get_registry
from sentinel_celery.worker.queues import select_queues
from sentinel_celery.worker.runtime import WorkerRuntime


def _on_worker_shutdown(sender=None, **kwargs):
    runtime = WorkerRuntime.current
    if runtime is not None:
        runtime.stop()


def _on_task_failure(sender=None, **kwargs):
    # Runs where the task ran (a pool child); one HINCRBY only on failures.
    cfg = get_config()
    if not cfg.worker["workerId"]:
        return
    try:
        get_registry(cfg).count_failure(cfg.worker_id)
    except redis.RedisError:
        pass


def connect_worker_signals(app, cfg: Config) -> None:
    def on_celeryd_init(sender=None, instance=None, **kwargs):
        if instance is not None and instance.app is app and not cfg.worker["workerId"]:
            cfg.worker["workerId"] = str(sender)  # the Celery nodename, e.g. celery@host

    def on_after_setup(sender=None, instance=None, **kwargs):
        if instance is not None and instance.app is app:
            select_queues(app, cfg)

    signals.celeryd_init.connect(on_celeryd_init, weak=False)
    signals.celeryd_after_setup.connect(on_after_setup, weak=False)
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
    signals.task_failure.connect(_on_task_failure, weak=False)
