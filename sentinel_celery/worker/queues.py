"""Which queues a worker consumes: its types (when started without ``-Q``) and its own direct queue.

Every worker also consumes its *direct queue* (``sentinel.direct.<worker id>``, see routing.py), so
the balancer and the coordinators can hand a task to one chosen worker, and records that it has one,
so the rebalancer can send home what waits there after the worker has gone.

Redis keys (under the namespace):
  balancer:direct-queues   set: worker ids that have a direct queue (read by cluster/rebalance.py)
"""
from __future__ import annotations

import redis

from sentinel_celery.config import Config
from sentinel_celery.routing import default_worker_queues, direct_queue
from sentinel_celery.state.connection import get_redis


def direct_queues_key(namespace: str) -> str:
    return f"{namespace}balancer:direct-queues"


def select_queues(app, cfg: Config) -> str:
    """At worker setup: the default queues if ``-Q`` was not given, plus the worker's direct queue."""
    queues = app.amqp.queues
    if queues._consume_from is None:
        queues.select(default_worker_queues(cfg, app))
    direct = direct_queue(cfg.worker_id)
    queues.select_add(direct)
    try:
        get_redis(cfg.redis_url).sadd(direct_queues_key(cfg.namespace), cfg.worker_id)
    except redis.RedisError:
        pass  # the registry entry lists the queue too; the rebalancer reads both
    return direct.name
