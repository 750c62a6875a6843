"""The Redis connection Sentinel's own state lives in (leases, registry, events).

One client per process and URL; redis-py's pool notices a fork and reconnects in the child,
so prefork pool children can use the same object safely. A URL that is not a Redis URL is refused
with :class:`ConfigError` (one line, password redacted) before redis-py sees it; the configured
``redis.url`` was already checked when the configuration loaded. ``redis://``, ``rediss://`` and
``unix://`` URLs go to redis-py's ``from_url``; a ``redis+sentinel://`` URL (redis_url.py) to a
client of the current master of a Redis Sentinel deployment (state/redis_sentinel.py).
"""
from __future__ import annotations

import threading

import redis

from sentinel_celery.config import ConfigError, get_config, redact_url, redis_url_problem
from sentinel_celery.redis_url import is_sentinel_url, parse_sentinel_url
from sentinel_celery.state.redis_sentinel import master_client

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def get_redis(url: str | None = None) -> redis.Redis:
    url = url or get_config().redis_url
    with _lock:
        client = _clients.get(url)
        if client is None:
            check_redis_url(url)
            if is_sentinel_url(url):
                client = master_client(parse_sentinel_url(url),
                                       failover_wait_s=get_config().get("redis.failoverWaitSeconds"))
            else:
                client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                              socket_connect_timeout=5, socket_timeout=10)
            _clients[url] = client
        return client


def check_redis_url(url: str) -> None:
    """Raise :class:`ConfigError` naming what is wrong with ``url`` (its password redacted)."""
    problem = redis_url_problem(url)
    if problem:
        raise ConfigError([f"Redis URL {redact_url(str(url))!r} is not usable: {problem}"])


def server_time_ms(client: redis.Redis) -> int:
    """Redis' clock, so that every host compares beats and expiries against one clock."""
    sec, usec = client.time()
    return sec * 1000 + usec // 1000
