"""Which :class:`~sentinel_celery.broker.base.Broker` an app (or a config) has, from its broker URL.

``redis://``, ``rediss://``, ``unix://``, kombu's ``sentinel://`` (what ``install()`` makes of
``redis+sentinel://``) → :class:`RedisBroker`; ``amqp://``, ``amqps://``,
``pyamqp://`` → :class:`AmqpBroker` (RabbitMQ; one per process and thread, reconnecting on use). Any other scheme raises :class:`UnsupportedBroker`
naming the scheme (never the URL: it may carry a password).

Redis keys: none.
"""
from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit

import redis

from sentinel_celery.broker.amqp_broker import AmqpBroker
from sentinel_celery.broker.amqp_transport import AMQP_SCHEMES
from sentinel_celery.broker.base import Broker
from sentinel_celery.broker.redis_broker import RedisBroker
from sentinel_celery.config import Config, get_config

REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")


# One AMQP connection per (URL, process, thread): duties call broker_for() every tick, and py-amqp
# channels are not thread-safe. close() only disconnects; the next call reconnects.
_amqp: dict[tuple, AmqpBroker] = {}
_amqp_lock = threading.Lock()


def _cached_amqp(url: str, cfg: Config, client: redis.Redis | None) -> AmqpBroker:
    key = (url, cfg.namespace, os.getpid(), threading.get_ident())
    with _amqp_lock:
        broker = _amqp.get(key)
        if broker is None:
            broker = _amqp[key] = AmqpBroker(url, cfg, client=client)
        return broker


class UnsupportedBroker(ValueError):
    """The broker URL names a transport Sentinel cannot read."""


def scheme_of(url: str | None) -> str:
    return urlsplit(url or "").scheme.split("+")[0].lower()


def is_amqp(url: str | None) -> bool:
    return scheme_of(url) in AMQP_SCHEMES


def _check(scheme: str) -> None:
    if scheme not in REDIS_SCHEMES + AMQP_SCHEMES:
        raise UnsupportedBroker(f"broker scheme '{scheme or '(none)'}://' is not supported by Sentinel "
                                f"(supported: {', '.join(s + '://' for s in REDIS_SCHEMES + AMQP_SCHEMES)})")


def broker_for(app, client: redis.Redis | None = None, cfg: Config | None = None) -> Broker:
    """The broker of a Celery ``app`` (its ``broker_url``). ``client``: the broker's Redis for a Redis
    broker; Sentinel's state Redis for RabbitMQ (held-message records)."""
    url = app.conf.broker_url
    scheme = scheme_of(url)
    _check(scheme)
    if scheme in AMQP_SCHEMES:
        return _cached_amqp(url, cfg or get_config(), client)
    return RedisBroker(app, client=client)


def broker_for_config(cfg: Config, client: redis.Redis | None = None) -> Broker:
    """The broker ``install()`` gives an app of ``cfg``, without the app (waiting messages only)."""
    url = cfg.broker_url
    scheme = scheme_of(url)
    _check(scheme)
    if scheme in AMQP_SCHEMES:
        return _cached_amqp(url, cfg, client)
    return RedisBroker.for_config(cfg, client=client)
