"""The worker registry: who is in the cluster, what it can run, how loaded it is, when it last beat.

Last beats live in one sorted set (score = Redis server time in ms), so "who is stale" is a single
``ZRANGEBYSCORE`` however many workers there are; details live in one hash per worker. Each start
of a worker is an *incarnation*; a beat from an incarnation that is no longer the registered one
(it was declared dead, or replaced) is refused, which is how a zombie learns it must re-register.
A new incarnation never hides an earlier one's work: one that never deregistered (killed, then
restarted under the same ``WORKER_ID``) is left in ``failover:pending`` for the monitor to recover.

Redis keys (under the namespace):
  workers                  zset: worker id -> last beat (ms) of live workers
  workers:offline          zset: worker id -> when it was declared offline (ms)
  worker:<id>              hash: id, nodename, hostname, pid, queues, capacity, metadata, started,
                           version, incarnation, instance, state, active, reserved, processed,
                           failed, concurrency, last_beat
  worker:<id>:incarnation  counter
  failover:pending         (state/failovers.py) an earlier incarnation a new one replaced without a
                           deregistration, for failover to recover
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from sentinel_celery.config import Config, get_config
from sentinel_celery.state.connection import get_redis, server_time_ms
from sentinel_celery.state.failovers import FailoverRecords
from sentinel_celery.version import __version__

ONLINE, STALE, OFFLINE, STOPPING = "online", "stale", "offline", "stopping"
DRAINING = "draining"  # set by cluster/drain.py: consumes nothing new, finishing what it holds


class WorkerIdInUse(RuntimeError):
    """Another live process is registered under this worker id."""

    def __init__(self, message: str, *, instance: str = "", hostname: str = "", pid: int = 0, started: int = 0):
        super().__init__(message)
        self.instance, self.hostname, self.pid, self.started = instance, hostname, pid, started


@dataclass
class Registration:
    """A new incarnation; ``replaced`` is the earlier one it took the id from without a deregistration
    (left to failover as a pending recovery), or ''."""

    incarnation: int
    replaced: str = ""


RESTARTED = ("restarted under the same worker id: the earlier incarnation stopped beating and never "
             "deregistered")


# KEYS: live, worker hash, incarnation counter, offline, failover pending
# ARGV: id, stale ms, instance, instance it may replace while fresh ('' = none), reason, field, value, ...
_REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
local old = redis.call('HMGET', KEYS[2], 'instance', 'state', 'hostname', 'pid', 'nodename', 'incarnation',
                       'concurrency', 'last_beat', 'started')
if last and old[1] ~= ARGV[3] and old[1] ~= ARGV[4] and (now - tonumber(last)) < tonumber(ARGV[2]) then
  return {0, old[3], old[4], now - tonumber(last), old[5], old[1], old[9]}
end
local replaced = ''
if old[1] and old[1] ~= ARGV[3] and old[2] ~= 'offline' then
  -- an earlier incarnation that never deregistered: failover gives back what it held
  local record = {worker_id = ARGV[1], instance = old[1], nodename = old[5] or '', hostname = old[3] or '',
                  pid = tonumber(old[4]) or 0, incarnation = tonumber(old[6]) or 0,
                  concurrency = tonumber(old[7]) or 1, last_beat = tonumber(last or old[8]) or 0,
                  declared_at = now, by = ARGV[1] .. ' (restarted)', reason = ARGV[5]}
  redis.call('HSET', KEYS[5], old[1], cjson.encode(record))
  replaced = old[1]
end
local incarnation = redis.call('INCR', KEYS[3])
redis.call('DEL', KEYS[2])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], 'incarnation', incarnation, 'state', 'online', 'last_beat', now,
           'registered', now)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return {1, incarnation, now, replaced}
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
        return self.register_incarnation(worker_id, instance, fields).incarnation

    def register_incarnation(self, worker_id: str, instance: str, fields: dict, *, replace: str = "",
                             reason: str = RESTARTED) -> Registration:
        """Register a new incarnation. An earlier one that never deregistered is not overwritten silently: it
        becomes a pending failover recovery (``failover:pending``), so its tasks are given back. Raise
        :class:`WorkerIdInUse` if an earlier one beat within the stale threshold, unless it is ``replace``
        (the caller knows its process is gone)."""
        fields = {"id": worker_id, "instance": instance, "version": __version__, **fields}
        res = self._register(
            keys=[self.live_key, self.worker_key(worker_id), f"{self.worker_key(worker_id)}:incarnation",
                  self.offline_key, FailoverRecords(self.client, self.ns).pending_key],
            args=[worker_id, self.stale_ms, instance, replace, reason, *self._flatten(fields)])
        if int(res[0]) == 0:
            hostname, pid, age_ms, nodename, old_instance, started = res[1:7]
            raise WorkerIdInUse(
                f"worker id '{worker_id}' is already in use by a live worker ({nodename or '?'}, pid {pid} "
                f"on {hostname}, last heartbeat {int(age_ms) / 1000:.1f}s ago); give this worker another "
                f"WORKER_ID, or stop the other one first",
                instance=old_instance or "", hostname=hostname or "", pid=int(pid or 0), started=int(started or 0))
        return Registration(int(res[1]), res[3] or "")

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
