"""Delivery-tag tracking: which worker incarnation holds which broker message.

kombu's Redis transport keeps every delivered-but-unacknowledged message in one hash keyed by
delivery tag, but not who holds it. Sentinel records the owner in the same place and at the same
moment: ``install()`` selects ``TrackingTransport``, kombu's Redis transport whose QoS adds one
``SADD tags:<instance> <tag>`` to the MULTI/EXEC pipeline in which kombu itself writes the unacked
entry. So a message is never unacked without its owner known — there is no window in which a
kill -9 (a task that crashes its worker at once, say) leaves a message only to kombu's visibility
timeout — and it costs no extra round trip.

With another transport (``broker_transport`` set by the user, ``rediss://``, Redis Sentinel, a
broker on another Redis than Sentinel's, a broker key prefix that is not a prefix of the namespace) the
worker falls back to recording the tag from ``task_received`` through a writer thread; there a
kill -9 within about a millisecond of receipt leaves the message to the visibility timeout.

Tags are not removed on ack (that would be a second write per task): at each heartbeat the worker
removes, in one SREM, the tags its channel no longer holds.

Redis keys (under the namespace):
  tags:<instance>   set: delivery tags held by one worker incarnation; TTL refreshed at each beat
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterable

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS
from kombu.utils.json import dumps

from .bootsteps import WorkerRuntime

logger = logging.getLogger(__name__)


class TagTracker:
    """What failover needs from a tag store."""

    def record(self, instance: str, tag: str) -> None:
        raise NotImplementedError

    def forget(self, instance: str, tags: Iterable[str], ttl_s: int) -> None:
        raise NotImplementedError

    def held_by(self, instance: str) -> set[str]:
        raise NotImplementedError

    def held_elsewhere(self, tags: Iterable[str], instances: Iterable[str]) -> set[str]:
        raise NotImplementedError

    def drop(self, instance: str) -> None:
        raise NotImplementedError


class RedisTagTracker(TagTracker):
    def __init__(self, client: redis.Redis, namespace: str):
        self.client = client
        self.ns = namespace

    def key(self, instance: str) -> str:
        return f"{self.ns}tags:{instance}"

    def record(self, instance, tag):
        self.client.sadd(self.key(instance), tag)

    def record_many(self, instance: str, tags: Iterable[str]) -> None:
        tags = list(tags)
        if tags:
            self.client.sadd(self.key(instance), *tags)

    def forget(self, instance, tags, ttl_s):
        tags = list(tags)
        pipe = self.client.pipeline(transaction=False)
        if tags:
            pipe.srem(self.key(instance), *tags)
        pipe.expire(self.key(instance), ttl_s)
        pipe.execute()

    def held_by(self, instance):
        return set(self.client.smembers(self.key(instance)))

    def held_elsewhere(self, tags, instances):
        """Those of ``tags`` that one of ``instances`` recorded (it received them again after a requeue)."""
        tags, instances = list(tags), list(instances)
        if not tags or not instances:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for instance in instances:
            pipe.smismember(self.key(instance), tags)
        found: set[str] = set()
        for flags in pipe.execute():
            found.update(tag for tag, flag in zip(tags, flags) if flag)
        return found

    def drop(self, instance):
        self.client.delete(self.key(instance))


class WorkerTags:
    """The worker main process's side: record on receive, prune at each beat, drop at shutdown."""

    def __init__(self, runtime, tracker: RedisTagTracker, ttl_s: int):
        self.runtime = runtime
        self.tracker = tracker
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._recorded: set[str] = set()
        self._instance = runtime.instance
        self._pending: list[str] = []
        self._wake = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None

    def recorded_by_broker(self, tag: str) -> None:
        """``TrackingQoS`` wrote ``tag`` with kombu's own unacked entry."""
        with self._lock:
            self._recorded.add(tag)

    def on_task_received(self, sender=None, request=None, **kwargs) -> None:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is None:
            return
        with self._wake:
            if str(tag) in self._recorded:
                return
            self._pending.append(str(tag))
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="sentinel-tag-writer", daemon=True)
                self._writer.start()
            self._wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                batch, self._pending = self._pending, []
                instance = self.runtime.instance
            try:
                self.tracker.record_many(instance, batch)
            except redis.RedisError as exc:
                # Not fatal: the messages still run; only a failover in the next moments would miss them.
                logger.warning("sentinel: could not record %d delivery tag(s): %s", len(batch), exc)
                continue
            with self._lock:
                self._recorded.update(batch)

    def held_now(self) -> set[str] | None:
        """Tags the worker's task channel holds (delivered, not yet acked or rejected)."""
        consumer = getattr(self.runtime.worker, "consumer", None)
        channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
        qos = getattr(channel, "qos", None)
        delivered = getattr(qos, "_delivered", None)
        if delivered is None:
            return None
        # set() of a dict/set runs in C without releasing the GIL: a consistent snapshot.
        return {str(t) for t in set(delivered) - set(getattr(qos, "_dirty", ()) or ())}

    def on_beat(self, runtime) -> None:
        with self._lock:
            recorded = set(self._recorded)
        held = self.held_now()
        if held is None:
            return
        if runtime.instance != self._instance:
            # Re-registered after being declared dead: what this process still legitimately holds
            # belongs to the new incarnation now (restored tags no longer exist, so re-recording
            # them is harmless).
            self._instance = runtime.instance
            self.tracker.record_many(runtime.instance, held)
            with self._lock:
                self._recorded = set(held)
            return
        gone = recorded - held
        self.tracker.forget(runtime.instance, gone, self.ttl_s)
        with self._lock:
            self._recorded -= gone

    def on_stop(self, runtime) -> None:
        # Deregistered: anything still unacked is restored by kombu at channel close (warm
        # shutdown), so nothing of this incarnation is left for failover to recover.
        try:
            self.tracker.drop(runtime.instance)
        except redis.RedisError:
            pass


class TrackingQoS(kombu_redis.QoS):
    """kombu's Redis QoS; in a Sentinel worker, the unacked entry also names its holder."""

    def append(self, message, delivery_tag):
        runtime = WorkerRuntime.current
        tags = getattr(runtime, "failover_tags", None)
        key = tags and tags.tracker.key(runtime.instance)
        prefix = self.channel.global_keyprefix
        if key is None or not key.startswith(prefix):
            return super().append(message, delivery_tag)  # the writer thread records it
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
        tags.recorded_by_broker(str(delivery_tag))


class TrackingChannel(kombu_redis.Channel):
    QoS = TrackingQoS


class TrackingTransport(kombu_redis.Transport):
    """``redis://`` as kombu implements it, with ``TrackingQoS``. ``install()`` selects it."""

    Channel = TrackingChannel
