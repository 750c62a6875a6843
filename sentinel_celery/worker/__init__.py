"""The worker layer: what runs inside a Celery worker process (main process and pool children).

Owns: the worker's identity, registration and heartbeat (runtime.py, bootsteps.py), the queues it
consumes (queues.py), the Celery signals it listens to (signals.py), delivery-tag tracking
(tags.py), acknowledge-on-receipt on RabbitMQ (held.py), fencing of stale executions (fencing.py),
the connection a monitor watches (live_connection.py), log shipping (logs.py), task statistics
(taskstats.py), and the thread every duty of the layers above runs in (duty.py).

May import: state/, broker/, routing, config. The layers above (cluster/, github/) attach to a
worker through :class:`~sentinel_celery.worker.runtime.WorkerRuntime`'s hook lists; this layer
never imports them.
"""
from __future__ import annotations

from celery import Celery

from sentinel_celery.config import Config
from sentinel_celery.worker.bootsteps import SentinelWorkerStep
from sentinel_celery.worker.fencing import connect_fencing
from sentinel_celery.worker.held import connect_held_messages
from sentinel_celery.worker.live_connection import connect_liveness
from sentinel_celery.worker.logs import connect_log_signals
from sentinel_celery.worker.signals import connect_worker_signals
from sentinel_celery.worker.tags import connect_tag_tracking
from sentinel_celery.worker.taskstats import connect_task_stats


def connect(app: Celery, cfg: Config) -> None:
    """Everything a Sentinel worker of ``app`` does for itself; called by ``install()``."""
    app.steps["worker"].add(SentinelWorkerStep)
    connect_worker_signals(app, cfg)
    connect_tag_tracking()
    connect_held_messages()
    connect_fencing(app)
    connect_liveness()
    connect_task_stats()
    connect_log_signals(cfg)
