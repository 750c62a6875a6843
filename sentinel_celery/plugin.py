"""``install(app)``: what Sentinel adds to a Celery app — queues, routing, broker options, bootsteps, signals.

The ready ``sentinel_celery.app`` is built by the same call, so a user's own app and ours behave alike.
"""
from __future__ import annotations

import logging
from importlib import import_module
from typing import Iterable

from celery import Celery
from kombu import Queue

from .config import Config, get_config, set_config
from .routing import TaskRouter

logger = logging.getLogger(__name__)

BUILTIN_JOBS = ("workers.build", "workers.test", "workers.deploy")


def install(app: Celery, config: Config | None = None, *, include_jobs: bool = True) -> Celery:
    """Adopt Sentinel in ``app``; returns the app. Idempotent."""
    if getattr(app, "sentinel_installed", False):
        return app
    if config is not None:
        set_config(config)
    cfg = config or get_config()
    conf = app.conf

    if not conf.broker_url:
        conf.broker_url = cfg.redis_url
    if conf.result_backend is None:
        from .github import result_backend_url
        conf.result_backend = result_backend_url(cfg)  # github+redis:// when GitHub is configured

    default_queue = conf.task_default_queue or "celery"
    queues = [Queue(t, routing_key=t) for t in cfg.task_types]
    existing = list(conf.task_queues or [])
    names = {q.name for q in existing}
    conf.task_queues = existing + [q for q in queues if q.name not in names] + (
        [] if default_queue in names or default_queue in cfg.task_types else [Queue(default_queue)])

    from .balancer import Balancer
    router = TaskRouter(app, cfg, placement=Balancer(app, cfg))
    routes = conf.task_routes
    if routes is None:
        conf.task_routes = (router,)
    elif isinstance(routes, (list, tuple)):
        conf.task_routes = (*routes, router)
    else:
        conf.task_routes = (routes, router)

    # Sentinel recovers dead workers itself, so a running message must never be redelivered by
    # kombu's visibility-timeout sweep: keep the timeout far above any task runtime.
    opts = dict(conf.broker_transport_options or {})
    opts.setdefault("visibility_timeout", cfg.get("distributed.failover.visibilityTimeoutSeconds"))
    if cfg.get("redis.brokerKeyPrefix"):
        opts.setdefault("global_keyprefix", cfg.get("redis.brokerKeyPrefix"))
    conf.broker_transport_options = opts
    if conf.broker_transport is None and conf.broker_url == cfg.redis_url and cfg.redis_url.startswith("redis://"):
        # kombu's Redis transport, recording each message's holder with its unacked entry (tracking.py)
        conf.broker_transport = "sentinel_celery.tracking:TrackingTransport"
    conf.task_acks_late = True
    conf.task_reject_on_worker_lost = True
    conf.worker_concurrency = conf.worker_concurrency or cfg.worker_get("capacity.maxConcurrentTasks")

    if include_jobs:
        conf.include = tuple(dict.fromkeys([*(conf.include or ()), *BUILTIN_JOBS]))
        # Import them here too, so that a client's router knows their types without a worker.
        for module in BUILTIN_JOBS:
            import_module(module)

    from .bootsteps import SentinelWorkerStep, connect_worker_signals
    app.steps["worker"].add(SentinelWorkerStep)
    from .coordination import install_worker_duties
    install_worker_duties()
    from .monitor import connect_worker_duties
    connect_worker_duties(app)
    connect_worker_signals(app, cfg)
    from .github import connect as connect_github
    connect_github(app, cfg)
    from .logs import connect_log_signals
    from .taskstats import connect_task_stats
    connect_task_stats()
    connect_log_signals(cfg)
    if cfg.get("monitoring.taskEvents"):  # Flower's task pages need task events (costs throughput)
        conf.worker_send_task_events = True
    app.sentinel_installed = True
    return app


def default_queues_for_worker(cfg: Config, app: Celery) -> list[str]:
    """Queues a worker started without ``-Q`` consumes: its supported types and the default queue."""
    return [*cfg.supported_task_types, app.conf.task_default_queue or "celery"]


def create_app(name: str = "sentinel_celery", config: Config | None = None, **celery_options) -> Celery:
    app = Celery(name, **celery_options)
    return install(app, config)


def selected_queues(app: Celery) -> Iterable[str]:
    return list(app.amqp.queues.consume_from or app.amqp.queues)
