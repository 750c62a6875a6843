"""The Redis connection Sentinel's own state lives in (leases, registry, events).

One client per process and URL; redis-py's pool notices a fork and reconnects in the child,
so prefork pool children can use the same object safely.
"""
from __future__ import annotations

import threading

import redis

from sentinel_celery.config import get_config

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def get_redis(url: str | None = None) -> redis.Redis:
    url = url or get_config().redis_url
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                          socket_connect_timeout=5, socket_timeout=10)
            _clients[url] = client
        return client


def server_time_ms(client: redis.Redis) -> int:
    """Redis' clock, so that every host compares beats and expiries against one clock."""
    sec, usec = client.time()
    return sec * 1000 + usec // 1000
