"""The worker registry: who is in the cluster, what it can run, how loaded it is, when it last beat.

Last beats live in one sorted set (score = Redis server time in ms), so "who is stale" is a single
``ZRANGEBYSCORE`` however many workers there are; details live in one hash per worker. Each start
of a worker is an *incarnation*; a beat from an incarnation that is no longer the registered one
(it was declared dead, or replaced) is refused, which is how a zombie learns it must re-register.

Redis keys (under the namespace):
  workers                  zset: worker id -> last beat (ms) of live workers
  workers:offline          zset: worker id -> when it was declared offline (ms)
  worker:<id>              hash: id, nodename, hostname, pid, queues, capacity, metadata, started,
                           version, incarnation, instance, state, active, reserved, processed,
                           failed, concurrency, last_beat
  worker:<id>:incarnation  counter
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from sentinel_celery.config import Config, get_config
from sentinel_celery.state.connection import get_redis, server_time_ms
from sentinel_celery.version import __version__

ONLINE, STALE, OFFLINE, STOPPING = "online", "stale", "offline", "stopping"
DRAINING = "draining"  # set by cluster/drain.py: consumes nothing new, finishing what it holds


class WorkerIdInUse(RuntimeError):
    """Another live process is registered under this worker id."""


_REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if last and redis.call('HGET', KEYS[2], 'instance') ~= ARGV[3]
   and (now - tonumber(last)) < tonumber(ARGV[2]) then
  local h = redis.call('HMGET', KEYS[2], 'hostname', 'pid', 'nodename')
  return {0, h[1], h[2], now - tonumber(last), h[3]}
end
local incarnation = redis.call('INCR', KEYS[3])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], 'incarnation', incarnation, 'state', 'online', 'last_beat', now,
           'registered', now)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return {1, incarnation, now}
"""

_BEAT = """
local h = redis.call('HMGET', KEYS[2], 'instance', 'state')
if h[1] ~= ARGV[2] or h[2] == 'offline' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], 'last_beat', now)
if h[2] == 'stale' then redis.call('HSET', KEYS[2], 'state', 'online') end
return now
"""

_DEREGISTER = """
if redis.call('HGET', KEYS[2], 'instance') ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

_JSON_FIELDS = ("queues", "capacity", "metadata")
_INT_FIELDS = ("pid", "incarnation", "active", "reserved", "processed", "failed", "concurrency",
               "last_beat", "registered", "started", "declared_offline")


@dataclass
class WorkerInfo:
    """One registry entry, as read back."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)
    status: str = ONLINE
    age_ms: int = 0

    def __getitem__(self, key):
        return self.data.get(key)

    @property
    def capacity(self) -> dict:
        return self.data.get("capacity") or {}

    @property
    def max_tasks(self) -> int:
        return int(self.data.get("concurrency") or self.capacity.get("maxConcurrentTasks") or 1)

    @property
    def active(self) -> int:
        return int(self.data.get("active") or 0)

    @property
    def utilization(self) -> float:
        return min(self.active / self.max_tasks, 1.0) if self.max_tasks else 0.0

    def as_dict(self) -> dict:
        # counters a worker has not bumped yet read 0, not missing
        return {"id": self.id, "status": self.status, "age_ms": self.age_ms,
                "utilization": round(self.utilization, 3), "processed": 0, "failed": 0, **self.data}


class RedisRegistry:
    def __init__(self, client: redis.Redis, namespace: str, stale_ms: int):
        self.client = client
        self.ns = namespace
        self.stale_ms = stale_ms
        self._register = client.register_script(_REGISTER)
        self._beat = client.register_script(_BEAT)
        self._deregister = client.register_script(_DEREGISTER)

    @property
    def live_key(self) -> str:
        return f"{self.ns}workers"

    @property
    def offline_key(self) -> str:
        return f"{self.ns}workers:offline"

    def worker_key(self, worker_id: str) -> str:
        return f"{self.ns}worker:{worker_id}"

    @staticmethod
    def _flatten(fields: dict) -> list:
        out = []
        for k, v in fields.items():
            out.extend([k, json.dumps(v) if k in _JSON_FIELDS else ("" if v is None else v)])
        return out

    def register(self, worker_id: str, instance: str, fields: dict) -> int:
        """Register a new incarnation; raise :class:`WorkerIdInUse` if a live one holds the id."""
        fields = {"id": worker_id, "instance": instance, "version": __version__, **fields}
        res = self._register(
            keys=[self.live_key, self.worker_key(worker_id), f"{self.worker_key(worker_id)}:incarnation",
                  self.offline_key],
            args=[worker_id, self.stale_ms, instance, *self._flatten(fields)])
        if int(res[0]) == 0:
            raise WorkerIdInUse(
                f"worker id '{worker_id}' is already in use by a live worker ({res[4] or '?'}, pid {res[2]} "
                f"on {res[1]}, last heartbeat {int(res[3]) / 1000:.1f}s ago); give this worker another "
                f"WORKER_ID, or stop the other one first")
        return int(res[1])

    def beat(self, worker_id: str, instance: str, load: dict) -> bool:
        """Record a heartbeat; False means this incarnation is no longer the registered one."""
        res = self._beat(keys=[self.live_key, self.worker_key(worker_id)],
                         args=[worker_id, instance, *self._flatten(load)])
        return bool(res)

    def count_failure(self, worker_id: str) -> None:
        self.client.hincrby(self.worker_key(worker_id), "failed", 1)

    def set_state(self, worker_id: str, state: str) -> None:
        self.client.hset(self.worker_key(worker_id), "state", state)

    def deregister(self, worker_id: str, instance: str) -> bool:
        return bool(self._deregister(keys=[self.live_key, self.worker_key(worker_id)], args=[worker_id, instance]))

    def mark_offline(self, worker_id: str, retention_s: int = 86400) -> bool:
        """Move a worker from live to offline; True only for the caller that made the move."""
        now = server_time_ms(self.client)
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.live_key, worker_id)
        pipe.zadd(self.offline_key, {worker_id: now})
        pipe.hset(self.worker_key(worker_id), mapping={"state": OFFLINE, "declared_offline": now})
        pipe.expire(self.worker_key(worker_id), retention_s)
        removed, *_ = pipe.execute()
        return bool(removed)

    def forget(self, worker_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.live_key, worker_id)
        pipe.zrem(self.offline_key, worker_id)
        pipe.delete(self.worker_key(worker_id))
        pipe.execute()

    # -- queries ---------------------------------------------------------------------------------
    def stale_ids(self, now_ms: int | None = None, threshold_ms: int | None = None) -> list[tuple[str, int]]:
        """Live workers whose last beat is older than the threshold: one ZRANGEBYSCORE."""
        now_ms = now_ms if now_ms is not None else server_time_ms(self.client)
        threshold_ms = self.stale_ms if threshold_ms is None else threshold_ms
        return [(wid, int(score)) for wid, score in
                self.client.zrangebyscore(self.live_key, "-inf", now_ms - threshold_ms, withscores=True)]

    def _decode(self, worker_id: str, raw: dict, now_ms: int, score: float | None) -> WorkerInfo:
        data: dict[str, Any] = {}
        for k, v in raw.items():
            if k in _JSON_FIELDS:
                try:
                    data[k] = json.loads(v)
                except ValueError:
                    data[k] = v
            elif k in _INT_FIELDS and v not in ("", None):
                try:
                    data[k] = int(float(v))
                except ValueError:
                    data[k] = v
            else:
                data[k] = v
        last = int(score) if score is not None else int(data.get("last_beat") or 0)
        age = max(now_ms - last, 0) if last else 0
        state = data.get("state", ONLINE)
        if score is None or state == OFFLINE:
            status = OFFLINE
        elif state in (STOPPING, DRAINING):
            status = state
        elif age > self.stale_ms or state == STALE:
            status = STALE
        else:
            status = ONLINE
        return WorkerInfo(worker_id, data, status, age)

    def get(self, worker_id: str) -> WorkerInfo | None:
        raw = self.client.hgetall(self.worker_key(worker_id))
        if not raw:
            return None
        score = self.client.zscore(self.live_key, worker_id)
        return self._decode(worker_id, raw, server_time_ms(self.client), score)

    def workers(self, include_offline: bool = True) -> list[WorkerInfo]:
        now = server_time_ms(self.client)
        live = self.client.zrange(self.live_key, 0, -1, withscores=True)
        ids: list[tuple[str, float | None]] = [(wid, score) for wid, score in live]
        if include_offline:
            ids += [(wid, None) for wid in self.client.zrange(self.offline_key, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for wid, _ in ids:
            pipe.hgetall(self.worker_key(wid))
        out = []
        for (wid, score), raw in zip(ids, pipe.execute(), strict=True):
            if not raw:
                if score is None:
                    self.client.zrem(self.offline_key, wid)  # retention expired
                continue
            out.append(self._decode(wid, raw, now, score))
        return out

    def online(self, task_type: str | None = None) -> list[WorkerInfo]:
        return [w for w in self.workers(include_offline=False)
                if w.status == ONLINE and (task_type is None or task_type in (w["queues"] or []))]


def get_registry(cfg: Config | None = None) -> RedisRegistry:
    """The registry of ``cfg``'s cluster (the current configuration by default)."""
    cfg = cfg or get_config()
    return RedisRegistry(get_redis(cfg.redis_url), cfg.namespace, cfg.get("distributed.heartbeat.staleThresholdMs"))
