"""Which :class:`~sentinel_celery.broker.base.Broker` an app (or a config) has, from its broker URL.

``redis://``, ``rediss://`` and ``sentinel_celery``'s tracking transport → :class:`RedisBroker`.
Any other scheme raises :class:`UnsupportedBroker` with the URL's scheme named (never the URL: it
may carry a password).

Redis keys: none.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import redis

from sentinel_celery.broker.base import Broker
from sentinel_celery.broker.redis_broker import RedisBroker
from sentinel_celery.config import Config

REDIS_SCHEMES = ("redis", "rediss", "unix")


class UnsupportedBroker(ValueError):
    """The broker URL names a transport Sentinel cannot read."""


def scheme_of(url: str | None) -> str:
    return urlsplit(url or "").scheme.split("+")[0].lower()


def _check(scheme: str) -> None:
    if scheme not in REDIS_SCHEMES:
        raise UnsupportedBroker(f"broker scheme '{scheme or '(none)'}://' is not supported by Sentinel "
                                f"(supported: {', '.join(s + '://' for s in REDIS_SCHEMES)})")


def broker_for(app, client: redis.Redis | None = None) -> Broker:
    """The broker of a Celery ``app`` (its ``broker_url``); ``client`` only for a Redis broker."""
    url = app.conf.broker_url
    _check(scheme_of(url))
    return RedisBroker(app, client=client)


def broker_for_config(cfg: Config, client: redis.Redis | None = None) -> Broker:
    """The broker ``install()`` gives an app of ``cfg``, without the app (waiting messages only)."""
    _check(scheme_of(cfg.redis_url))
    return RedisBroker.for_config(cfg, client=client)
