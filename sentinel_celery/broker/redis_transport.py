"""``TrackingTransport``: kombu's Redis transport, recording each message's holder with its unacked entry.

kombu's Redis transport keeps every delivered-but-unacknowledged message in one hash keyed by
delivery tag, but not who holds it. ``install()`` selects ``TrackingTransport``, whose QoS adds one
``SADD tags:<instance> <tag>`` (see state/tags.py) to the MULTI/EXEC pipeline in which kombu itself
writes the unacked entry. So a message is never unacked without its holder known — no window in
which a kill -9 right after receipt leaves a message only to kombu's visibility timeout — and it
costs no extra round trip.

Who the holder is, is not this layer's business: the worker layer sets :data:`current_holder` in a
worker's main process (worker/tags.py). Without a holder, or when the holder's key lies outside the
broker's key prefix (the pipeline would write it elsewhere), the QoS behaves exactly as kombu's and
the worker records the tag itself.

Redis keys: kombu's ``unacked``/``unacked_index`` (under the broker prefix), and the holder's
``tags:<instance>`` set.
"""
from __future__ import annotations

import time
from typing import Protocol

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS
from kombu.utils.json import dumps


class Holder(Protocol):
    """What the transport needs of the process that receives messages."""

    def tag_key(self) -> str | None:
        """The full Redis key of the set the current incarnation's tags go to."""

    def recorded_by_broker(self, tag: str) -> None:
        """``tag`` was written with kombu's own unacked entry."""


#: the receiving worker's holder, set by the worker layer in the worker's main process
current_holder: Holder | None = None


class TrackingQoS(kombu_redis.QoS):
    """kombu's Redis QoS; in a Sentinel worker, the unacked entry also names its holder."""

    def append(self, message, delivery_tag):
        holder = current_holder
        key = holder.tag_key() if holder is not None else None
        prefix = self.channel.global_keyprefix
        if key is None or not key.startswith(prefix):
            return super().append(message, delivery_tag)  # the worker records it itself
        key = key[len(prefix):]  # kombu's pipeline adds the broker's key prefix back
        delivery = message.delivery_info
        # kombu's QoS.append, with the SADD in the same transaction.
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()}) \
                .hset(self.unacked_key, delivery_tag,
                      dumps([message._raw, delivery["exchange"], delivery["routing_key"]])) \
                .sadd(key, delivery_tag) \
                .execute()
            VirtualQoS.append(self, message, delivery_tag)
        holder.recorded_by_broker(str(delivery_tag))


class TrackingChannel(kombu_redis.Channel):
    QoS = TrackingQoS


class TrackingTransport(kombu_redis.Transport):
    """``redis://`` as kombu implements it, with ``TrackingQoS``. ``install()`` selects it."""

    Channel = TrackingChannel
