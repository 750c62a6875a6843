"""A worker's side of delivery-tag tracking: record on receive, prune at each beat, drop at shutdown.

Failover gives back exactly the messages a dead incarnation held, found in its ``tags:<instance>``
set (state/tags.py). With the tracking transport (broker/redis_transport.py) the tag is written in
kombu's own unacked transaction and this only remembers it; with any other transport the tag is
recorded from ``task_received`` by a writer thread (a kill -9 within about a millisecond of receipt
then leaves that message to the broker's own redelivery).

Tags are not removed on ack (that would be a second write per task): at each heartbeat the worker
removes, in one SREM, the tags its channel no longer holds.

After a broker reconnect (Redis restarted, a network blip) Celery drops what it had prefetched on the old
channel, and kombu's restore of those messages fails if Redis is still down: they would stay in ``unacked``,
held by a worker that no longer knows them, until the visibility timeout. At each beat the worker checks the
tags it recorded that its channel no longer holds: one still unacked and not executing here, two beats in a
row, is given back to its queue (broker/base.py). So is one recorded under this incarnation that the worker never
got: Redis took it and recorded it (broker/redis_fetch.py) but the reply was lost with the connection. An ack
that could not reach Redis as its task finished is completed at the first beat that can, and such a message is
never given back.

Redis keys: ``tags:<instance>`` (see state/tags.py); the broker's ``unacked`` (read, and restore).
"""
from __future__ import annotations

import logging
import threading

import redis
from celery import signals
from celery.worker import state as worker_state

from sentinel_celery.broker import redis_transport
from sentinel_celery.broker.base import Broker, Unacked
from sentinel_celery.broker.factory import UnsupportedBroker, broker_for, is_amqp
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.tags import RedisTagTracker
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


class WorkerTags:
    """The worker main process's side: record on receive, prune at each beat, drop at shutdown."""

    def __init__(self, runtime, tracker: RedisTagTracker, ttl_s: int, unacked: Broker | None = None):
        self.runtime = runtime
        self.unacked = unacked
        self._orphans: set[str] = set()
        self._not_recorded: list[Unacked] = []
        self._acks_owed: set[str] = set()
        self.tracker = tracker
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._recorded: set[str] = set()
        self._instance = runtime.instance
        self._pending: list[str] = []
        self._wake = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None

    def tag_key(self) -> str:
        return self.tracker.key(self.runtime.instance)

    def recorded_by_broker(self, tag: str) -> None:
        """``TrackingQoS`` wrote ``tag`` with kombu's own unacked entry."""
        with self._lock:
            self._recorded.add(tag)

    def executing(self) -> set[str]:
        if self.runtime.stopping:
            return set()
        tags = (getattr(getattr(r, "message", None), "delivery_tag", None) for r in tuple(worker_state.active_requests))
        return {str(tag) for tag in tags if tag is not None}

    def not_recorded(self, tag: str, message: dict, exchange: str, routing_key: str) -> None:
        with self._lock:
            self._not_recorded.append(Unacked(tag, message, exchange or "", routing_key or ""))

    def ack_later(self, tag: str) -> None:
        with self._lock:
            self._acks_owed.add(tag)

    def _complete_acks(self) -> None:
        with self._lock:
            owed = set(self._acks_owed)
        for tag in owed:
            self.unacked.remove(tag)  # the ack kombu could not send: its task has finished
            with self._lock:
                self._acks_owed.discard(tag)

    def _put_back_not_recorded(self) -> None:
        with self._lock:
            waiting, self._not_recorded = self._not_recorded, []
        for message in waiting:
            try:
                queues = self.unacked.put_back_taken(message)
            except redis.RedisError:
                with self._lock:
                    self._not_recorded.append(message)
                raise
            if queues:
                logger.warning("sentinel: put task %s back on %s: Redis went away as this worker took it",
                               message.task_id, ",".join(queues))

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

    def _task_channel(self):
        consumer = getattr(self.runtime.worker, "consumer", None)
        return getattr(getattr(consumer, "task_consumer", None), "channel", None)

    def never_received(self, held: set[str], recorded: set[str]) -> set[str]:
        """Tags recorded under this incarnation in Redis that the worker neither recorded nor holds: taken for
        it by a script whose reply was lost (none while a take's reply is still on its way)."""
        if getattr(self._task_channel(), "take_in_flight", True):
            return set()
        return self.tracker.held_by(self.runtime.instance) - held - recorded

    def held_now(self) -> set[str] | None:
        """Tags the worker's task channel holds (delivered, not yet acked or rejected)."""
        channel = self._task_channel()
        qos = getattr(channel, "qos", None)
        delivered = getattr(qos, "_delivered", None)
        if delivered is None:
            return None
        # set() of a dict/set runs in C without releasing the GIL: a consistent snapshot.
        return {str(t) for t in set(delivered) - set(getattr(qos, "_dirty", ()) or ())}

    def on_beat(self, runtime) -> None:
        if self._acks_owed and self.unacked is not None:
            self._complete_acks()
        if self._not_recorded and self.unacked is not None:
            self._put_back_not_recorded()
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
        if self.unacked is not None:
            gone |= self.never_received(held, recorded)
            if gone:
                gone -= self._give_back_orphans(gone)
        self.tracker.forget(runtime.instance, gone, self.ttl_s)
        with self._lock:
            self._recorded -= gone

    def _give_back_orphans(self, gone: set[str]) -> set[str]:
        """Of the tags the channel no longer holds, give back the orphans seen twice; returns the tags to keep."""
        still = self.unacked.still_held(gone)
        if not still:
            self._orphans = set()
            return set()
        with self._lock:
            executing = self.executing() | self._acks_owed
        orphans = still - executing
        confirmed = orphans & self._orphans
        self._orphans = orphans - confirmed
        given = []
        for tag in confirmed:
            done = self.unacked.restore(tag)
            if done is not None:
                given.append(done[0].task_id)
        if given:
            logger.warning("sentinel: gave back %d message(s) this worker had taken before a broker reconnect and "
                           "no longer holds: %s", len(given), ", ".join(str(t) for t in given))
        return (still & executing) | self._orphans

    def on_stop(self, runtime) -> None:
        # Deregistered: anything still unacked is restored by kombu at channel close (warm
        # shutdown), so nothing of this incarnation is left for failover to recover.
        try:
            self.tracker.drop(runtime.instance)
        except redis.RedisError:
            pass


def _start(runtime: WorkerRuntime) -> None:
    if is_amqp(runtime.worker.app.conf.broker_url):
        return  # held messages record their own tokens (worker/held.py)
    cfg = runtime.cfg
    tracker = RedisTagTracker(get_redis(cfg.redis_url), cfg.namespace)
    try:
        unacked = broker_for(runtime.worker.app)
    except UnsupportedBroker:
        unacked = None
    runtime.tags = WorkerTags(runtime, tracker, cfg.get("distributed.failover.offlineRetentionSeconds"), unacked)
    redis_transport.current_holder = runtime.tags


def _on_beat(runtime: WorkerRuntime) -> None:
    tags = getattr(runtime, "tags", None)
    if tags is not None:
        tags.on_beat(runtime)


def _stop(runtime: WorkerRuntime) -> None:
    tags = getattr(runtime, "tags", None)
    if tags is not None:
        tags.on_stop(runtime)
        if redis_transport.current_holder is tags:
            redis_transport.current_holder = None


def _on_task_received(sender=None, request=None, **kwargs) -> None:
    runtime = WorkerRuntime.current
    tags = getattr(runtime, "tags", None)
    if tags is not None and request is not None:
        tags.on_task_received(sender, request)


def connect_tag_tracking() -> None:
    """Track the delivery tags of the Sentinel workers this process starts. Idempotent."""
    for hooks, hook in ((WorkerRuntime.on_start, _start), (WorkerRuntime.on_beat, _on_beat),
                        (WorkerRuntime.on_stop, _stop)):
        if hook not in hooks:
            hooks.append(hook)
    signals.task_received.connect(_on_task_received, weak=False, dispatch_uid="sentinel-tags-received")
