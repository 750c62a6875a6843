"""``RedisBroker``: the :class:`~sentinel_celery.broker.base.Broker` of an app whose broker is Redis.

It puts together what the modules beside it own: the queue lists (redis_queues.py) and kombu's
``unacked`` hash (redis_unacked.py); the tracking transport (redis_transport.py) is what records each
message's holder. kombu's Redis transport does not requeue a dead consumer's messages by itself (only
after its visibility timeout, which ``install()`` keeps far above any task), so Sentinel restores
them: :meth:`release` has nothing to do.

Redis keys: the broker's (see the two modules above); nothing of Sentinel's.
"""
from __future__ import annotations

from typing import Callable, Iterable

import redis

from sentinel_celery.broker.base import Broker, Unacked, Waiting
from sentinel_celery.broker.redis_queues import BrokerQueues
from sentinel_celery.broker.redis_unacked import UnackedMessages
from sentinel_celery.config import Config


class RedisBroker(Broker):
    """kombu's Redis transport: queue lists and the ``unacked`` hash, read and moved in Lua/MULTI."""

    requeues_on_disconnect = False

    def __init__(self, app, client: redis.Redis | None = None, *, queues: BrokerQueues | None = None):
        self.app = app
        self.queues = queues or BrokerQueues(app, client=client)
        self.client = self.queues.client
        self._unacked: UnackedMessages | None = None

    @classmethod
    def for_config(cls, cfg: Config, client: redis.Redis | None = None) -> "RedisBroker":
        """The broker ``install()`` gives an app of ``cfg``, without building the app (queues only)."""
        return cls(None, queues=BrokerQueues.for_config(cfg, client=client))

    @property
    def unacked(self) -> UnackedMessages:
        if self._unacked is None:
            if self.app is None:
                raise RuntimeError("unacknowledged messages need the Celery app (broker_for(app))")
            self._unacked = UnackedMessages(self.app, client=self.client)
        return self._unacked

    # -- waiting messages ------------------------------------------------------------------------
    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        return self.queues.depths(queues)

    def queue_stats(self, queues: Iterable[str], now: float) -> dict[str, dict]:
        return self.queues.queue_stats(queues, now)

    def oldest(self, queue: str) -> Waiting | None:
        return self.queues.oldest(queue)

    def move_oldest(self, waiting: Waiting, destination: str, *, home: str, at: str = "tail") -> bool:
        return self.queues.move_oldest(waiting, destination, home=home, at=at)

    def move_all(self, source: str, destination: str | Callable[[dict], str], *,
                 limit: int | None = None) -> list[tuple[Waiting, str]]:
        return self.queues.move_all(source, destination, limit=limit)

    # -- unacknowledged --------------------------------------------------------------------------
    def get_many(self, tags: Iterable[str]) -> dict[str, Unacked]:
        return self.unacked.get_many(tags)

    def exists(self, tag: str) -> bool:
        return self.unacked.exists(tag)

    def still_held(self, tags: Iterable[str]) -> set[str]:
        return self.unacked.still_unacked(tags)

    def put_back_taken(self, message: Unacked) -> list[str]:
        return self.unacked.put_back(message)

    def restore(self, tag: str, *, headers: dict | None = None) -> tuple[Unacked, list[str]] | None:
        return self.unacked.restore(tag, headers=headers)

    def remove(self, tag: str) -> Unacked | None:
        return self.unacked.remove(tag)

    # -- lifetime --------------------------------------------------------------------------------
    def disconnect(self) -> None:
        if self._unacked is not None:
            self._unacked.close()
