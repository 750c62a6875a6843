"""``TrackingTransport``: kombu's Redis transport, recording each message's holder with its unacked entry.

kombu's Redis transport keeps every delivered-but-unacknowledged message in one hash keyed by
delivery tag, but not who holds it. ``install()`` selects ``TrackingTransport``, whose QoS adds one
``SADD tags:<instance> <tag>`` (see state/tags.py) to the MULTI/EXEC pipeline in which kombu itself
writes the unacked entry. So a message is never unacked without its holder known — no window in
which a kill -9 right after receipt leaves a message only to kombu's visibility timeout — and it
costs no extra round trip.

A broker reconnect (Redis restarted, or a network blip) makes Celery close the consumer's channel, and kombu
restores every message the channel held at close. ``TrackingQoS`` leaves out the ones still executing (the task
goes on running after a reconnect; restoring it would run it twice) and lets them ack through the closed
channel's client (kombu's own ack finds the channel's connection gone and fails with ``'NoneType' object has no
attribute 'client'``); an ack that cannot reach Redis at all is left to the holder to complete once Redis
answers. A message it cannot restore because Redis is down stays in ``unacked`` under its holder's
tag; the worker gives it back once Redis answers again (worker/tags.py).

Who the holder is, is not this layer's business: the worker layer sets :data:`current_holder` in a
worker's main process (worker/tags.py). Without a holder, or when the holder's key lies outside the
broker's key prefix (the pipeline would write it elsewhere), the QoS behaves exactly as kombu's and
the worker records the tag itself.

On a Redis Sentinel deployment (``REDIS_URL=redis+sentinel://...``, which ``install()`` turns into
kombu's ``sentinel://`` URLs) ``TrackingSentinelTransport`` is kombu's sentinel transport with the
same QoS. kombu cycles through the sentinel URLs when a connection fails and, on each switch,
re-derives the transport from the URL's scheme (the stock ``sentinel`` one); ``StayOnTransport``
keeps the transport the connection was made with.

Redis keys: kombu's ``unacked``/``unacked_index`` (under the broker prefix), and the holder's
``tags:<instance>`` set.
"""
from __future__ import annotations

import logging
import time
from typing import Protocol

import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS
from kombu.utils.json import dumps

from sentinel_celery.broker.redis_fetch import AtomicFetch

logger = logging.getLogger(__name__)


class Holder(Protocol):
    """What the transport needs of the process that receives messages."""

    def tag_key(self) -> str | None:
        """The full Redis key of the set the current incarnation's tags go to."""

    def recorded_by_broker(self, tag: str) -> None:
        """``tag`` was written with kombu's own unacked entry."""

    def not_recorded(self, tag: str, message: dict, exchange: str, routing_key: str) -> None:
        """Redis went away between taking ``message`` off its queue and recording it as unacked: kombu drops
        it; the holder puts it back once Redis answers."""

    def ack_later(self, tag: str) -> None:
        """The ack of ``tag`` could not reach Redis; the holder completes it once Redis answers."""

    def executing(self) -> set[str]:
        """Tags of the messages whose task is running now and will go on running after a reconnect
        (empty while the worker shuts down: then kombu restores everything, as it always does)."""


#: the receiving worker's holder, set by the worker layer in the worker's main process
current_holder: Holder | None = None


class TrackingQoS(kombu_redis.QoS):
    """kombu's Redis QoS; in a Sentinel worker, the unacked entry also names its holder."""

    def fetch_tag_key(self) -> str | None:
        """The full key of the holder's tag set, when the broker's own writes can reach it (else None)."""
        holder = current_holder
        key = holder.tag_key() if holder is not None else None
        return key if key is not None and key.startswith(self.channel.global_keyprefix or "") else None

    def append(self, message, delivery_tag):
        holder = current_holder
        if holder is not None and delivery_tag is not None and delivery_tag == self.channel.taken_tag:
            VirtualQoS.append(self, message, delivery_tag)  # recorded as it was taken (broker/redis_fetch.py)
            holder.recorded_by_broker(str(delivery_tag))
            return
        key = self.fetch_tag_key()
        if key is None:
            return super().append(message, delivery_tag)  # the worker records it itself
        key = key[len(self.channel.global_keyprefix or ""):]  # kombu's pipeline adds the broker's key prefix back
        delivery = message.delivery_info
        # kombu's QoS.append, with the SADD in the same transaction.
        try:
            with self.pipe_or_acquire() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}) \
                    .hset(self.unacked_key, delivery_tag,
                          dumps([message._raw, delivery["exchange"], delivery["routing_key"]])) \
                    .sadd(key, delivery_tag) \
                    .execute()
        except (redis.ConnectionError, redis.TimeoutError):
            holder.not_recorded(str(delivery_tag), message._raw, delivery["exchange"], delivery["routing_key"])
            raise
        VirtualQoS.append(self, message, delivery_tag)
        holder.recorded_by_broker(str(delivery_tag))

    def _closed_client(self):
        """The client of a channel a reconnect closed: kombu can no longer make a pool for it (its transport
        has no connection: ``'NoneType' object has no attribute 'hostname'``), but the client it had still
        reaches Redis."""
        return self.channel.__dict__.get("client")

    def ack(self, delivery_tag):
        try:
            try:
                return super().ack(delivery_tag)
            except AttributeError:
                client = self._closed_client()
                if client is None:
                    raise
            self._remove_from_indices(delivery_tag, client.pipeline()).execute()
        except (redis.ConnectionError, redis.TimeoutError):
            # Redis is away as the task finishes: the holder acks it once Redis answers, and nothing may
            # give it back meanwhile (kombu's restore at close, or the worker's own give-back).
            holder = current_holder
            if holder is None:
                raise
            holder.ack_later(str(delivery_tag))
        VirtualQoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        try:
            return super().reject(delivery_tag, requeue=requeue)
        except AttributeError:
            client = self._closed_client()
            if client is None:
                raise
        if requeue:
            self.restore_by_tag(delivery_tag, client=client, leftmost=True)
        else:
            self._remove_from_indices(delivery_tag, client.pipeline()).execute()
        VirtualQoS.ack(self, delivery_tag)

    def restore_unacked(self, client=None):
        """kombu's restore at channel close, less what is still executing; a Redis that does not answer leaves
        the rest in ``unacked`` for the worker to give back later instead of raising."""
        holder = current_holder
        executing = holder.executing() if holder is not None else set()
        left = 0
        for tag in list(self._delivered):
            if str(tag) in executing:
                continue
            if left:  # Redis is down: do not wait for a refused connection once per message
                left += 1
                continue
            try:
                self.restore_by_tag(tag, client=client)
            except (redis.RedisError, OSError, AttributeError) as exc:
                logger.warning("sentinel: could not give back message %s at channel close (%s); the worker gives "
                               "it back when Redis answers again", tag, exc)
                left = 1
        if left > 1:
            logger.warning("sentinel: %d message(s) left for the worker to give back once Redis answers", left)
        self._delivered.clear()


class TrackingChannel(AtomicFetch, kombu_redis.Channel):
    QoS = TrackingQoS


class TrackingTransport(kombu_redis.Transport):
    """``redis://`` as kombu implements it, with ``TrackingQoS``. ``install()`` selects it."""

    Channel = TrackingChannel


class TrackingSentinelChannel(AtomicFetch, kombu_redis.SentinelChannel):
    QoS = TrackingQoS


class TrackingSentinelTransport(kombu_redis.SentinelTransport):
    """``sentinel://`` as kombu implements it, with ``TrackingQoS``. ``install()`` selects it."""

    Channel = TrackingSentinelChannel


class StayOnTransport(Connection):
    """kombu's ``Connection``, keeping its transport class when it fails over to the next URL."""

    def switch(self, conn_str):
        transport = self._initial_params.get("transport")
        super().switch(conn_str)
        if transport:
            self.transport_cls = transport  # not the stock transport of the next URL's scheme


def stay_on_transport(app) -> None:
    """Make ``app``'s broker connections keep their transport across kombu's URL failover."""
    app.amqp.Connection = StayOnTransport
