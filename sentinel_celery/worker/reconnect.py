"""After a lost broker connection comes back: give back the messages the lost one held.

When the broker connection breaks (a Redis master switch, a network cut), Celery drops the
messages the worker had received but not started (prefetched, or waiting for their ETA), saying
the broker redelivers them. On Redis it is kombu's channel close that puts them back, and it cannot
while the master is gone, so they stay in kombu's ``unacked`` hash until the visibility timeout,
which Sentinel keeps far above any task runtime. :class:`GiveBackOnReconnect`, a consumer bootstep,
notes at the break which delivery tags the worker held and, once the consumer is connected again,
puts back every one of them that is not running — at the head of its queue, as failover does for a
dead worker. A running task keeps its message: its acknowledgement ends it as usual.

Owns no Redis keys (the broker puts the held messages back: ``Broker.restore``, broker/base.py).
"""
from __future__ import annotations

import logging

import redis
from celery import bootsteps
from celery.worker import state as worker_state

from sentinel_celery.broker.factory import broker_for
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


def running_tags() -> set[str]:
    """Delivery tags of the requests this worker is running now."""
    tags = set()
    for request in tuple(worker_state.active_requests):
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            tags.add(str(tag))
    return tags


def channel_tags(consumer) -> set[str]:
    """Delivery tags kombu's channel of ``consumer`` delivered and has not seen acknowledged."""
    channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
    qos = getattr(channel, "qos", None)
    delivered = getattr(qos, "_delivered", None) or {}
    return {str(t) for t in set(delivered) - set(getattr(qos, "_dirty", ()) or ())}


class GiveBackOnReconnect(bootsteps.StartStopStep):
    """Consumer step: see the module docstring."""

    label = "Sentinel give-back"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        self.connects = 0
        self.held_at_break: set[str] = set()
        super().__init__(c, **kwargs)

    def stop(self, c):
        # The consumer restarts (a lost connection) or stops: remember what the worker held.
        tags = getattr(WorkerRuntime.current, "tags", None)
        self.held_at_break = channel_tags(c) | (tags.recorded() if tags is not None else set())

    def start(self, c):
        self.connects += 1
        if self.connects == 1 or not self.held_at_break:
            return
        stranded = self.held_at_break - running_tags()
        self.held_at_break = set()
        if stranded:
            self.give_back(c.app, stranded)

    @staticmethod
    def give_back(app, tags: set[str]) -> list[str]:
        given = []
        try:
            with broker_for(app) as broker:
                for tag in sorted(tags):
                    if broker.restore(tag) is not None:
                        given.append(tag)
        except redis.RedisError as exc:
            logger.warning("sentinel: could not give back %d message(s) held before the broker connection "
                           "was lost: %s", len(tags) - len(given), exc)
        if given:
            logger.info("sentinel: gave back %d message(s) held when the broker connection was lost", len(given))
        return given
