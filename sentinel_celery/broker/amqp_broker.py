"""``AmqpBroker``: the :class:`~sentinel_celery.broker.base.Broker` of an app on RabbitMQ (``amqp://``).

Waiting messages are read over AMQP on a connection of Sentinel's own (kombu/py-amqp):

* lengths by a passive ``queue.declare`` (a queue that does not exist has 0);
* the next message (:meth:`oldest`, and its age for :meth:`queue_stats`) by ``basic.get`` without
  ack: while Sentinel looks at it no consumer can take it; :meth:`put_back` rejects it with requeue
  (RabbitMQ puts it back in its place);
* moves publish the message to its destination (with publisher confirms) and only then ack the
  original, so a crash between the two duplicates a waiting message rather than losing it. Moved
  messages join the *tail* of their destination (AMQP cannot push at a queue's head).

Messages a worker has taken are not RabbitMQ's business on ``amqp://``: a Sentinel worker acks each
on receipt after recording it in Redis (amqp_held.py, worker/held.py), so ``consumer_timeout`` never
fires and failover republishes from that record. :meth:`release` closes a dead worker's connections
through the management API when ``rabbitmq.managementUrl`` is set (rabbitmq_management.py).

Redis keys: those of amqp_held.py.
"""
from __future__ import annotations

import functools
import logging
import uuid
from typing import Callable, Iterable

import redis
from amqp.exceptions import ChannelError, NotFound
from amqp.exceptions import ConnectionError as AmqpConnectionError

from sentinel_celery.broker.amqp_held import HELD_STAMP, REPUBLISH_HEADER, HeldMessages
from sentinel_celery.broker.amqp_transport import envelope_of, open_connection, publish_envelope
from sentinel_celery.broker.base import Broker, Unacked, Waiting, message_age
from sentinel_celery.broker.rabbitmq_management import ManagementAPI
from sentinel_celery.config import Config
from sentinel_celery.state.connection import get_redis

logger = logging.getLogger(__name__)


def _reconnecting(method):
    """A lost connection is dropped, so the next call (the next duty tick) opens a new one."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OSError, AmqpConnectionError):
            self._peeked.clear()
            self.disconnect()
            raise
    return wrapper


class AmqpBroker(Broker):
    """RabbitMQ through AMQP 0-9-1, with Sentinel's held-message records in Redis."""

    requeues_on_disconnect = True

    def __init__(self, url: str, cfg: Config, client: redis.Redis | None = None):
        self.url = url
        self.cfg = cfg
        state = client or get_redis(cfg.redis_url)
        self.held = HeldMessages(state, cfg.namespace, cfg.get("distributed.failover.visibilityTimeoutSeconds"))
        management = cfg.get("rabbitmq.managementUrl")
        self.management = ManagementAPI(management) if management else None
        self._connection = None
        self._channel = None
        # Passive declares on a connection of their own: a missing queue closes the channel, and
        # py-amqp reopens it from inside whatever wait is running, which can swallow another
        # channel's reply on a shared connection.
        self._probe_connection = None
        self._probe = None
        self._publisher = None  # publishes, with confirms
        self._peeked: list[tuple[object, int]] = []

    @classmethod
    def for_app(cls, app, cfg: Config, client: redis.Redis | None = None) -> "AmqpBroker":
        return cls(app.conf.broker_url, cfg, client=client)

    # -- connection ------------------------------------------------------------------------------
    def _connect(self):
        if self._connection is None:
            self._connection = open_connection(self.url)
            self._connection.connect()
        return self._connection

    @property
    def channel(self):
        if self._channel is None:
            self._channel = self._connect().channel()
        return self._channel

    @property
    def probe(self):
        if self._probe is None:
            if self._probe_connection is None:
                self._probe_connection = open_connection(self.url)
                self._probe_connection.connect()
            self._probe = self._probe_connection.channel()
        return self._probe

    @property
    def publisher(self):
        if self._publisher is None:
            self._publisher = self._connect().channel()
        return self._publisher

    def _declare_passive(self, queue: str):
        """The queue's declare-ok, or None if it does not exist."""
        try:
            return self.probe.queue_declare(queue=queue, passive=True)
        except NotFound:  # the server closed the channel; py-amqp reopened it
            return None

    def _lost_channel(self) -> None:
        """A channel error closed the channel (e.g. a passive declare of a missing queue)."""
        try:
            if self._channel is not None:
                self._channel.close()
        except Exception:  # already closed by the server
            pass
        self._channel = None
        self._peeked.clear()

    def disconnect(self) -> None:
        self._requeue_peeked()
        for closable in (self._probe, self._probe_connection, self._publisher, self._channel, self._connection):
            try:
                if closable is not None:
                    closable.close()
            except Exception:  # closing a dead connection: nothing left to release
                pass
        self._probe = self._probe_connection = self._publisher = self._channel = self._connection = None

    # -- waiting messages ------------------------------------------------------------------------
    def _depth(self, queue: str) -> int:
        declared = self._declare_passive(queue)
        return int(declared.message_count) if declared is not None else 0

    @_reconnecting
    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        return {q: self._depth(q) for q in queues}

    def _get(self, queue: str) -> Waiting | None:
        if self._declare_passive(queue) is None:
            return None
        try:
            raw = self.channel.basic_get(queue=queue, no_ack=False)
        except NotFound:  # deleted meanwhile
            self._lost_channel()
            return None
        if raw is None:
            return None
        message = self.channel.message_to_python(raw)
        tag = message.delivery_tag
        self._peeked.append((self._channel, tag))
        return Waiting(queue, (self._channel, tag), envelope_of(message))

    @_reconnecting
    def queue_stats(self, queues: Iterable[str], now: float) -> dict[str, dict]:
        out = {}
        for q in queues:
            length = self._depth(q)
            age = None
            if length:
                waiting = self._get(q)
                if waiting is not None:
                    age = message_age(waiting.message, now)
                    self.put_back(waiting)
            out[q] = {"length": length, "oldest_age_seconds": age}
        return out

    @_reconnecting
    def oldest(self, queue: str) -> Waiting | None:
        self._requeue_peeked()
        return self._get(queue)

    @_reconnecting
    def put_back(self, waiting: Waiting) -> None:
        channel, tag = waiting.raw
        if (channel, tag) in self._peeked:
            self._peeked.remove((channel, tag))
            if channel is self._channel:
                self._channel.basic_reject(tag, requeue=True)

    def _requeue_peeked(self) -> None:
        for channel, tag in list(self._peeked):
            try:
                if channel is self._channel:
                    self._channel.basic_reject(tag, requeue=True)
            except ChannelError:
                self._lost_channel()
        self._peeked.clear()

    @_reconnecting
    def move_oldest(self, waiting: Waiting, destination: str, *, home: str, at: str = "tail") -> bool:
        channel, tag = waiting.raw
        if channel is not self._channel or (channel, tag) not in self._peeked:
            return False  # our channel was lost meanwhile: RabbitMQ put it back
        self._ensure_queue(destination)
        publish_envelope(self.publisher, waiting.message, exchange="", routing_key=destination, home=home)
        self._peeked.remove((channel, tag))
        self._channel.basic_ack(tag)
        return True

    @_reconnecting
    def move_all(self, source: str, destination: str | Callable[[dict], str], *,
                 limit: int | None = None) -> list[tuple[Waiting, str]]:
        self._requeue_peeked()
        moved: list[tuple[Waiting, str]] = []
        while limit is None or len(moved) < limit:
            waiting = self._get(source)
            if waiting is None:
                break
            dest = destination(waiting.message) if callable(destination) else destination
            if dest == source:  # it belongs where it is: moving it would go round forever
                self.put_back(waiting)
                break
            if self.move_oldest(waiting, dest, home=dest):
                moved.append((waiting, dest))
        return moved

    def _ensure_queue(self, queue: str) -> None:
        if self._declare_passive(queue) is None:
            self.probe.queue_declare(queue=queue, durable=True, auto_delete=False)

    # -- messages taken (acked on receipt, held by Sentinel) ---------------------------------------
    def tag_of(self, request) -> str | None:
        token = getattr(request, HELD_STAMP, None)
        if token is None:
            token = (getattr(request, "request_dict", None) or {}).get(HELD_STAMP)
        return str(token) if token else None

    def get_many(self, tags: Iterable[str]) -> dict[str, Unacked]:
        return self.held.get_many(tags)

    def exists(self, tag: str) -> bool:
        return self.held.exists(tag)

    @_reconnecting
    def restore(self, tag: str, *, headers: dict | None = None) -> tuple[Unacked, list[str]] | None:
        generation = uuid.uuid4().hex
        record = self.held.prepare_restore(tag, generation)
        if record is None:
            return None
        exchange, routing_key = record.get("exchange") or "", record.get("routing_key") or ""
        try:
            publish_envelope(self.publisher, record["message"], exchange=exchange, routing_key=routing_key,
                             headers={**(headers or {}), "redelivered": True, REPUBLISH_HEADER: generation})
        except Exception:
            self.held.abort_restore(record)
            raise
        self.held.finish_restore(record)
        return self.held.decode(record), [routing_key] if routing_key else []

    def remove(self, tag: str) -> Unacked | None:
        return self.held.remove(tag)

    def release(self, worker: dict) -> int | None:
        if self.management is None or not worker.get("hostname") or not worker.get("pid"):
            return None
        return self.management.close_worker(worker["hostname"], int(worker["pid"]),
                                            reason=f"sentinel: worker {worker.get('worker_id', '')} declared dead")
