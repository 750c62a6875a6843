"""``install(app)``: what Sentinel adds to a Celery app — queues, routing, broker options, bootsteps, signals.

The ready ``sentinel_celery.app`` is built by the same call, so a user's own app and ours behave alike.
``install`` is where the layers meet: it wires the worker layer (worker/), the cluster duties
(cluster/), the GitHub mirror (github/) and the intake (intake/) into the app; none of them imports this module.
"""
from __future__ import annotations

import logging
import os
import sys
from importlib import import_module

import click
from celery import Celery, signals
from kombu import Queue

from sentinel_celery import cluster, github, intake, worker
from sentinel_celery.broker.amqp_transport import client_properties, routing_into_headers
from sentinel_celery.broker.factory import is_amqp
from sentinel_celery.broker.redis_transport import stay_on_transport
from sentinel_celery.cluster.balancer import Balancer
from sentinel_celery.config import Config, ConfigError, get_config, set_config
from sentinel_celery.redis_url import (
    is_sentinel_url,
    kombu_sentinel_url,
    kombu_transport_options,
    parse_sentinel_url,
)
from sentinel_celery.routing import TaskRouter

logger = logging.getLogger(__name__)

BUILTIN_JOBS = ("workers.build", "workers.test", "workers.deploy")


def install(app: Celery, config: Config | None = None, *, include_jobs: bool = True) -> Celery:
    """Adopt Sentinel in ``app``; returns the app. Idempotent."""
    if getattr(app, "sentinel_installed", False):
        return app
    if config is not None:
        set_config(config)
    cfg = config or _config_or_exit()
    conf = app.conf

    # redis+sentinel://: kombu's sentinel:// URLs, with the master name in the transport options
    sentinel = parse_sentinel_url(cfg.redis_url) if is_sentinel_url(cfg.redis_url) else None
    own_broker_url = kombu_sentinel_url(sentinel) if sentinel else cfg.redis_url
    if not conf.broker_url:
        conf.broker_url = cfg.get("broker.url") or own_broker_url
    on_amqp = is_amqp(conf.broker_url)
    if conf.result_backend is None:
        conf.result_backend = github.result_backend_url(cfg)  # github+redis:// when GitHub is configured

    default_queue = conf.task_default_queue or "celery"
    queues = [Queue(t, routing_key=t) for t in cfg.task_types]
    existing = list(conf.task_queues or [])
    names = {q.name for q in existing}
    conf.task_queues = existing + [q for q in queues if q.name not in names] + (
        [] if default_queue in names or default_queue in cfg.task_types else [Queue(default_queue)])

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
    if on_amqp:
        # every connection names its process, so failover can close a dead worker's (management API)
        opts.setdefault("client_properties", client_properties())
        signals.before_task_publish.connect(_routing_into_headers, weak=False,
                                            dispatch_uid="sentinel-amqp-routing-headers")
    else:
        opts.setdefault("visibility_timeout", cfg.get("distributed.failover.visibilityTimeoutSeconds"))
    if sentinel is not None:  # the broker (when it is this Redis) and the result backend need the master's name
        result_opts = dict(conf.result_backend_transport_options or {})
        for key, value in kombu_transport_options(sentinel).items():
            if conf.broker_url == own_broker_url:
                opts.setdefault(key, value)
            result_opts.setdefault(key, value)
        conf.result_backend_transport_options = result_opts
    if cfg.get("redis.brokerKeyPrefix"):
        opts.setdefault("global_keyprefix", cfg.get("redis.brokerKeyPrefix"))
        # results too (celery-task-meta-*), so one prefix holds everything a cluster keeps in Redis
        result_opts = dict(conf.result_backend_transport_options or {})
        result_opts.setdefault("global_keyprefix", cfg.get("redis.brokerKeyPrefix"))
        conf.result_backend_transport_options = result_opts
    conf.broker_transport_options = opts
    if conf.broker_transport is None and conf.broker_url == own_broker_url:
        # kombu's Redis (or Redis Sentinel) transport, recording each message's holder with its unacked entry
        if sentinel is not None:
            conf.broker_transport = "sentinel_celery.broker.redis_transport:TrackingSentinelTransport"
            stay_on_transport(app)
        elif cfg.redis_url.startswith("redis://"):
            conf.broker_transport = "sentinel_celery.broker.redis_transport:TrackingTransport"
    # A result stored while Redis restarts is retried, so a task that succeeded is not recorded FAILURE.
    for key, value, default in (("result_backend_always_retry", True, False),
                                ("result_backend_max_retries", 20, float("inf"))):
        if key not in conf.changes and conf.get(key) == default:
            conf[key] = value
    conf.task_acks_late = True
    conf.task_reject_on_worker_lost = True
    conf.worker_concurrency = conf.worker_concurrency or cfg.worker_get("capacity.maxConcurrentTasks")

    if include_jobs:
        conf.include = tuple(dict.fromkeys([*(conf.include or ()), *BUILTIN_JOBS]))
        # Import them here too, so that a client's router knows their types without a worker.
        for module in BUILTIN_JOBS:
            import_module(module)

    worker.connect(app, cfg)
    cluster.connect(app, cfg)
    github.connect(app, cfg)
    intake.connect(app, cfg)
    if cfg.get("monitoring.taskEvents"):  # Flower's task pages need task events (costs throughput)
        conf.worker_send_task_events = True
    app.sentinel_installed = True
    return app


#: sysexits.h EX_CONFIG: what a supervisor sees when a worker will not start because of its configuration
EX_CONFIG = getattr(os, "EX_CONFIG", 78)


def _config_or_exit() -> Config:
    """The configuration; under Celery's command line (``celery -A app worker``) an invalid one ends
    the process with its errors and EX_CONFIG instead of Celery's "Unable to load celery application"
    traceback. Anywhere else the :class:`ConfigError` is raised."""
    try:
        return get_config()
    except ConfigError as exc:
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.find_root().command.name == "celery":
            click.echo(f"sentinel: {exc.describe()}", err=True)
            sys.exit(EX_CONFIG)
        raise


def _routing_into_headers(sender=None, headers=None, properties=None, **kwargs) -> None:
    routing_into_headers(headers, properties)


def create_app(name: str = "sentinel_celery", config: Config | None = None, **celery_options) -> Celery:
    app = Celery(name, **celery_options)
    return install(app, config)

