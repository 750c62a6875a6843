"""kombu's unacknowledged messages as failover touches them: look one up, restore it, remove it.

With ``acks_late``, a message a worker has taken (running, prefetched, or held for its ETA) stays in
kombu's ``unacked`` hash until the worker acks it. Failover gives a dead worker's messages back here,
one WATCH/MULTI transaction per message (the same transaction as kombu's ``restore_by_tag``), so when
two monitors race, each message is moved once.

Unlike ``restore_by_tag``, a restored message gets a **fresh delivery tag**. kombu keeps a message's
tag when it restores it, so after the next worker takes it the old tag would be valid again: a second,
later restore by that tag (a slow second monitor) would then pull the message from under the worker
now running it, and a late ack from the dead worker, should it come back, would delete the new
worker's record of it. With a fresh tag the dead worker's tag no longer exists anywhere, and both
are no-ops. That is also how a returning worker's pool child tells that its execution is stale
(:meth:`UnackedMessages.exists`).

Queue names, priority lists and exchange bindings are resolved through a channel of the app's own
connection, as kombu resolves them; keys carry the broker's ``global_keyprefix``.

Redis keys (the broker's, under its ``global_keyprefix``; nothing of Sentinel's):
  unacked                      hash: delivery tag -> JSON [message, exchange, routing key]
  unacked_index                zset: delivery tag -> delivery time (the consumer's clock)
  <queue>, <queue>\\x06\\x16<n>  lists: ready messages (LPUSH to publish, BRPOP to consume)
"""
from __future__ import annotations

import json
import uuid
from typing import Callable, Iterable

import redis

from sentinel_celery.broker.base import Unacked
from sentinel_celery.broker.redis_queues import PRIORITY_SEP
from sentinel_celery.redis_url import redis_url_of_broker
from sentinel_celery.state.connection import get_redis


class UnackedMessages:
    """The unacked messages of one Celery app's Redis broker."""

    def __init__(self, app, client: redis.Redis | None = None):
        self.app = app
        opts = app.conf.broker_transport_options or {}
        self.prefix = opts.get("global_keyprefix", "") or ""
        self.unacked_key = self.prefix + opts.get("unacked_key", "unacked")
        self.index_key = self.prefix + opts.get("unacked_index_key", "unacked_index")
        self.client = client or get_redis(redis_url_of_broker(app.conf.broker_url, opts))
        self._connection = None
        self._channel = None

    # -- routing, as kombu does it -------------------------------------------------------------
    @property
    def channel(self):
        if self._channel is None:
            self._connection = self.app.connection_for_write()
            self._channel = self._connection.default_channel
        return self._channel

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
        self._connection = self._channel = None

    def __enter__(self) -> "UnackedMessages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def queues_for(self, exchange: str, routing_key: str) -> list[str]:
        """The queues a message published to (exchange, routing key) is delivered to."""
        if not exchange:
            return [routing_key] if routing_key else []
        channel = self.channel
        try:
            found = channel.typeof(exchange).lookup(channel.get_table(exchange), exchange, routing_key, None)
        except KeyError:
            return []
        return sorted(q for q in found if q)

    def list_key(self, queue: str, message: dict) -> str:
        channel = self.channel
        return self.prefix + channel._q_for_pri(queue, channel._get_message_priority(message, reverse=False))

    # -- reads ---------------------------------------------------------------------------------
    def exists(self, tag: str) -> bool:
        return bool(self.client.hexists(self.unacked_key, tag))

    def still_unacked(self, tags: Iterable[str]) -> set[str]:
        """Those of ``tags`` still in ``unacked``, in one HMGET."""
        tags = list(tags)
        if not tags:
            return set()
        return {tag for tag, raw in zip(tags, self.client.hmget(self.unacked_key, tags), strict=True)
                if raw is not None}

    def get_many(self, tags: Iterable[str]) -> dict[str, Unacked]:
        """The given tags that are still unacked, in one round trip."""
        tags = list(tags)
        if not tags:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for tag in tags:
            pipe.hget(self.unacked_key, tag)
            pipe.zscore(self.index_key, tag)
        res = pipe.execute()
        out = {}
        for i, tag in enumerate(tags):
            raw, score = res[2 * i], res[2 * i + 1]
            if raw is not None:
                out[tag] = self._decode(tag, raw, score)
        return out

    @staticmethod
    def _decode(tag: str, raw: str | bytes, score: float | None = None) -> Unacked:
        message, exchange, routing_key = json.loads(raw)
        return Unacked(tag, message, exchange or "", routing_key or "", score)

    # -- moves ---------------------------------------------------------------------------------
    def restore(self, tag: str, *, headers: dict | None = None) -> tuple[Unacked, list[str]] | None:
        """Put the message back at the head of its queue(s) under a new delivery tag.

        Returns (the message as it was, the queues it went to), or None if it is no longer unacked
        (acked, or another monitor restored it first) or no queue is bound for it any more.
        """
        def plan(taken: Unacked) -> list[tuple[str, str]] | None:
            return self._pushes(taken, headers)

        taken = self._take(tag, plan)
        if taken is None:
            return None
        message, pushes = taken
        return message, sorted({key[len(self.prefix):].split(PRIORITY_SEP)[0] for key, _ in pushes})

    def _pushes(self, taken: Unacked, headers: dict | None = None) -> list[tuple[str, str]] | None:
        queues = self.queues_for(taken.exchange, taken.routing_key)
        if not queues:
            return None
        message = json.loads(json.dumps(taken.message))
        props = message.setdefault("properties", {})
        props["delivery_tag"] = str(uuid.uuid4())
        props.setdefault("delivery_info", {})["redelivered"] = True
        message.setdefault("headers", {}).update({"redelivered": True, **(headers or {})})
        payload = json.dumps(message)
        return [(self.list_key(queue, message), payload) for queue in queues]

    def put_back(self, message: Unacked) -> list[str]:
        """A message taken off its queue that never reached ``unacked`` (Redis went away in between): back to
        the head of its queue(s) under a new tag, unless it did reach ``unacked`` after all. Returns the queues."""
        if self.exists(message.tag):
            return []  # it was recorded: its holder gives it back (worker/tags.py)
        pushes = self._pushes(message) or []
        pipe = self.client.pipeline(transaction=True)
        for key, payload in pushes:
            pipe.rpush(key, payload)
        pipe.execute()
        return sorted({key[len(self.prefix):].split(PRIORITY_SEP)[0] for key, _ in pushes})

    def remove(self, tag: str) -> Unacked | None:
        """Take the message out of circulation (dead letter); None if it is no longer unacked."""
        taken = self._take(tag, lambda taken: [])
        return taken[0] if taken else None

    def _take(self, tag: str, plan: Callable[[Unacked], list[tuple[str, str]] | None]):
        outcome: list = []

        def transaction(pipe):
            outcome.clear()
            raw = pipe.hget(self.unacked_key, tag)
            # Plan before MULTI: resolving queues reads exchange bindings.
            pushes = plan(self._decode(tag, raw)) if raw is not None else None
            pipe.multi()
            if pushes is None:
                return
            pipe.zrem(self.index_key, tag)
            pipe.hdel(self.unacked_key, tag)
            for key, payload in pushes:
                pipe.rpush(key, payload)  # RPUSH: the head of the list, the next one BRPOP takes
            outcome.extend([self._decode(tag, raw), pushes])

        self.client.transaction(transaction, self.unacked_key)
        return (outcome[0], outcome[1]) if outcome else None
