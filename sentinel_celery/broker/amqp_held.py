"""Messages a worker took from RabbitMQ and acknowledged on receipt: Sentinel's own record of them.

RabbitMQ closes the channel of a consumer that holds a delivery unacknowledged longer than
``consumer_timeout`` (``PRECONDITION_FAILED``; 30 min by default), and Celery's worker dies with it.
So on ``amqp://`` a Sentinel worker acknowledges each message as it receives it (worker/held.py),
*after* writing it here; from then on Sentinel, not RabbitMQ, is responsible for it until the task
finishes: failover republishes the records of a dead worker, a warm shutdown republishes what never
ran, and a pool child that died has its message republished by the worker's main process.

Each record has a *token* (a uuid4, the message's "delivery tag" for Sentinel): it is what the
worker lists in ``tags:<instance>`` (state/tags.py) and what a returning zombie checks (its record is
gone once failover republished it, so it stores no stale result).

No duplicates: a message is claimed by ``(task id, retries)``. A worker killed after writing the
record but before its ack reached RabbitMQ leaves both a record and a requeued copy; the copy is
refused at claim (the index still names the dead worker's token), and failover republishes the
record. A republished message carries ``sentinel_republish: <generation>``; the index then names
that generation, so only that copy is claimed, once.

Redis keys (under the namespace, all with the failover visibility TTL):
  amqp:held:<token>                      JSON record: token, instance, task id, retries, delivered_at,
                                         exchange, routing_key, message (the kombu envelope), restoring
  amqp:held-id:<task id>:<retries>       the token that holds it, or ``republished:<generation>``
  tags:<instance>                        (state/tags.py) the tokens the instance holds
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterable

import redis

from sentinel_celery.broker.base import Unacked
from sentinel_celery.state.tags import RedisTagTracker

REPUBLISH_HEADER = "sentinel_republish"
#: the request key under which a worker passes a message's token to its pool child (fencing)
HELD_STAMP = "sentinel_held"
REPUBLISHED = "republished:"
#: a restore that started this long ago without finishing was cut short (its monitor died)
RESTORE_STALE_S = 30

_CLAIM = """
local cur = redis.call('GET', KEYS[2])
if cur then
  if string.sub(cur, 1, 12) ~= 'republished:' or cur ~= 'republished:' .. ARGV[4] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
"""

# Finished (or dead-lettered): the record goes, and the index if it still names this token.
_FORGET = """
local raw = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('SREM', KEYS[3], ARGV[1])
return raw
"""

# Before republishing: point the index at the new generation, mark the record as being restored.
_PREPARE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local record = cjson.decode(raw)
local now = tonumber(ARGV[3])
if record['restoring_at'] and now - tonumber(record['restoring_at']) < tonumber(ARGV[4]) then
  return false
end
record['restoring_at'] = now
redis.call('SET', KEYS[1], cjson.encode(record), 'KEEPTTL')
redis.call('SET', KEYS[2], 'republished:' .. ARGV[1], 'EX', ARGV[2])
return raw
"""


def claim_key(task_id: str, retries: int) -> str:
    return f"{task_id}:{int(retries or 0)}"


class HeldMessages:
    """Records of messages acknowledged on receipt, in Sentinel's Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int):
        self.client = client
        self.ns = namespace
        self.ttl_s = int(ttl_s)
        self.tags = RedisTagTracker(client, namespace)
        self._claim = client.register_script(_CLAIM)
        self._forget = client.register_script(_FORGET)
        self._prepare = client.register_script(_PREPARE)

    def record_key(self, token: str) -> str:
        return f"{self.ns}amqp:held:{token}"

    def index_key(self, task_id: str, retries: int) -> str:
        return f"{self.ns}amqp:held-id:{claim_key(task_id, retries)}"

    # -- the worker ------------------------------------------------------------------------------
    def claim(self, instance: str, envelope: dict, exchange: str, routing_key: str) -> str | None:
        """Record a message just received; its token, or None if it is a duplicate delivery."""
        headers = envelope.get("headers") or {}
        task_id, retries = headers.get("id") or "", int(headers.get("retries") or 0)
        token = str(uuid.uuid4())
        record = {"token": token, "instance": instance, "task_id": task_id, "retries": retries,
                  "delivered_at": time.time(), "exchange": exchange or "", "routing_key": routing_key or "",
                  "message": envelope}
        ok = self._claim(keys=[self.record_key(token), self.index_key(task_id, retries), self.tags.key(instance)],
                         args=[json.dumps(record), token, self.ttl_s, headers.get(REPUBLISH_HEADER) or ""])
        return token if ok else None

    def forget(self, token: str, instance: str) -> dict | None:
        """The task finished (or its message is dropped): the record goes. Returns it."""
        raw = self.client.get(self.record_key(token))
        record = json.loads(raw) if raw else None
        index = self.index_key(record["task_id"], record["retries"]) if record else f"{self.ns}amqp:held-id:-"
        self._forget(keys=[self.record_key(token), index, self.tags.key(instance)], args=[token])
        return record

    def held_by(self, instance: str) -> set[str]:
        return self.tags.held_by(instance)

    # -- failover --------------------------------------------------------------------------------
    def exists(self, token: str) -> bool:
        return bool(self.client.exists(self.record_key(token)))

    def get_many(self, tokens: Iterable[str]) -> dict[str, Unacked]:
        tokens = list(tokens)
        if not tokens:
            return {}
        raws = self.client.mget([self.record_key(t) for t in tokens])
        return {t: self.decode(json.loads(raw)) for t, raw in zip(tokens, raws, strict=True) if raw}

    @staticmethod
    def decode(record: dict) -> Unacked:
        return Unacked(record["token"], record["message"], record.get("exchange") or "",
                       record.get("routing_key") or "", record.get("delivered_at"),
                       extra={"instance": record.get("instance"), "retries": record.get("retries", 0)})

    def prepare_restore(self, token: str, generation: str) -> dict | None:
        """Mark ``token`` as being republished as ``generation``; its record, or None if it is gone
        (finished, or another monitor republishes it)."""
        raw = self._prepare(keys=[self.record_key(token), self._index_for(token)],
                            args=[generation, self.ttl_s, time.time(), RESTORE_STALE_S])
        return json.loads(raw) if raw else None

    def finish_restore(self, record: dict) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.record_key(record["token"]))
        pipe.srem(self.tags.key(record["instance"]), record["token"])
        pipe.execute()

    def abort_restore(self, record: dict) -> None:
        """The republish failed: the record stays, restorable again at once."""
        record = dict(record)
        record.pop("restoring_at", None)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.record_key(record["token"]), json.dumps(record), ex=self.ttl_s)
        pipe.set(self.index_key(record["task_id"], record["retries"]), record["token"], ex=self.ttl_s)
        pipe.execute()

    def remove(self, token: str) -> Unacked | None:
        raw = self.client.get(self.record_key(token))
        if not raw:
            return None
        record = json.loads(raw)
        taken = self._forget(keys=[self.record_key(token), self.index_key(record["task_id"], record["retries"]),
                                   self.tags.key(record["instance"])], args=[token])
        return self.decode(json.loads(taken)) if taken else None

    def _index_for(self, token: str) -> str:
        raw = self.client.get(self.record_key(token))
        if not raw:
            return f"{self.ns}amqp:held-id:-"
        record = json.loads(raw)
        return self.index_key(record["task_id"], record["retries"])
