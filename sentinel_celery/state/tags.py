"""Delivery tags by holder: which worker incarnation holds which broker message.

A broker keeps a delivered-but-unacknowledged message without saying who holds it; failover needs
to know, to give back exactly a dead worker's messages. One set per worker incarnation records the
delivery tags it received (written in the broker's own unacked transaction where the transport
allows it, see broker/redis_transport.py; else by the worker, see worker/tags.py).

Redis keys (under the namespace):
  tags:<instance>   set: delivery tags held by one worker incarnation; TTL refreshed at each beat
"""
from __future__ import annotations

from typing import Iterable

import redis


class RedisTagTracker:
    """The ``tags:<instance>`` sets of one namespace."""

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
            found.update(tag for tag, flag in zip(tags, flags, strict=True) if flag)
        return found

    def drop(self, instance):
        self.client.delete(self.key(instance))
