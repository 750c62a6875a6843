"""Fenced leases: mutual exclusion with a TTL, owner-checked renew/release and fencing tokens.

A lease is a Redis hash that expires. Every acquisition takes its token from one counter per
namespace that never expires, so tokens for every name strictly increase, and a name leaves nothing
behind but its stats, which expire ``statsRetentionSeconds`` after its last acquisition: lock keys
like ``build:{sha}`` do not make Redis grow without bound. Renew and release compare owner and
token atomically (Lua), so a holder that was paused past its TTL can neither extend nor delete the
lease of the holder that came after it. A process-wide :class:`LeaseKeeper` thread renews every
held lease at about a third of its TTL and marks it lost when renewal is refused.

Redis keys (under the namespace):
  lease:<name>          hash: owner, token, acquired, expires, worker, task_id (PEXPIRE = ttl)
  lease:fence           counter: the last token handed out, for all names (never expires)
  lease:stats:<name>    hash: acquisitions, conflicts, waits, releases, lost, fenced, last_token, ...;
                        expires statsRetentionSeconds after the last acquisition
  leases:held           zset: name -> expiry (ms), for listing without SCAN
  leases:recent         zset: name -> last acquisition (ms), for stats; older than the retention is
                        dropped when stats are read
  (lease:fence:<name>, leases:known: per-name counters and the name set of earlier versions; a
  per-name counter is folded into lease:fence when its name is next acquired)
  worker:<id>:leases    set: names held by a worker, so failover can fence them
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import redis

from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis

logger = logging.getLogger(__name__)


class LockContended(Exception):
    """The lease is held by someone else and waiting did not get it."""

    def __init__(self, name: str, holder: str | None = None, token: int | None = None,
                 expires_in_ms: int | None = None):
        self.name, self.holder, self.token, self.expires_in_ms = name, holder, token, expires_in_ms
        detail = f" (held by {holder}, token {token}" + (
            f", expires in {expires_in_ms / 1000:.1f}s)" if expires_in_ms is not None else ")") if holder else ""
        super().__init__(f"lease '{name}' is held by another owner{detail}")

    def __reduce__(self):
        return (LockContended, (self.name, self.holder, self.token, self.expires_in_ms))


class LeaseLost(Exception):
    """The lease expired or was taken over while its holder was still running."""

    def __init__(self, name: str, token: int | None = None):
        self.name, self.token = name, token
        super().__init__(f"lease '{name}' (token {token}) was lost: it expired or another owner holds it now")

    def __reduce__(self):
        return (LeaseLost, (self.name, self.token))


_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'conflicts', 1)
  local h = redis.call('HMGET', KEYS[1], 'owner', 'token')
  return {0, h[1], h[2], redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
local legacy = redis.call('GET', KEYS[7])
if legacy then
  if tonumber(legacy) >= token then
    token = tonumber(legacy) + 1
    redis.call('SET', KEYS[2], token)
  end
  redis.call('DEL', KEYS[7])
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'acquired', now,
           'expires', now + ttl, 'worker', ARGV[3], 'task_id', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HINCRBY', KEYS[3], 'acquisitions', 1)
redis.call('HSET', KEYS[3], 'last_holder', ARGV[1], 'last_worker', ARGV[3], 'last_acquired', now,
           'last_token', token)
redis.call('PEXPIRE', KEYS[3], math.max(tonumber(ARGV[6]), 2 * ttl))
redis.call('ZADD', KEYS[4], now + ttl, ARGV[5])
redis.call('ZADD', KEYS[6], now, ARGV[5])
if ARGV[3] ~= '' then redis.call('SADD', KEYS[5], ARGV[5]) end
return {1, token, now}
"""

_RENEW = """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HSET', KEYS[1], 'expires', now + ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
return 1
"""

_RELEASE = """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[3])
redis.call('HINCRBY', KEYS[4], 'releases', 1)
return 1
"""

# Fence every lease a worker holds: delete it only if that worker still holds it, and bump the
# fencing counter so the old holder's token is stale even before anyone else acquires.
_FENCE_WORKER = """
local prefix = ARGV[1]
local released = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = prefix .. 'lease:' .. name
  if redis.call('HGET', key, 'worker') == ARGV[2] then
    redis.call('DEL', key)
    redis.call('ZREM', prefix .. 'leases:held', name)
    redis.call('HINCRBY', prefix .. 'lease:stats:' .. name, 'fenced', 1)
    table.insert(released, name)
  end
end
redis.call('DEL', KEYS[1])
return released
"""


@dataclass
class Acquired:
    ok: bool
    token: int | None = None
    holder: str | None = None
    expires_in_ms: int | None = None


class LeaseBackend:
    """What the rest of Sentinel needs from a lease store."""

    def acquire(self, name: str, owner: str, ttl_ms: int, worker: str = "", task_id: str = "") -> Acquired:
        raise NotImplementedError

    def renew(self, name: str, owner: str, token: int, ttl_ms: int) -> bool:
        raise NotImplementedError

    def release(self, name: str, owner: str, token: int, worker: str = "") -> bool:
        raise NotImplementedError

    def fence_worker(self, worker: str) -> list[str]:
        raise NotImplementedError

    def record(self, name: str, stat: str, amount: int = 1) -> None:
        raise NotImplementedError


class RedisLeaseBackend(LeaseBackend):
    def __init__(self, client: redis.Redis, namespace: str, stats_retention_s: float = 7 * 24 * 3600):
        self.client = client
        self.ns = namespace
        self.stats_retention_ms = int(stats_retention_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._fence = client.register_script(_FENCE_WORKER)

    def key(self, name: str) -> str:
        return f"{self.ns}lease:{name}"

    def stats_key(self, name: str) -> str:
        return f"{self.ns}lease:stats:{name}"

    def worker_key(self, worker: str) -> str:
        return f"{self.ns}worker:{worker}:leases"

    @property
    def held_key(self) -> str:
        return f"{self.ns}leases:held"

    @property
    def recent_key(self) -> str:
        return f"{self.ns}leases:recent"

    def acquire(self, name, owner, ttl_ms, worker="", task_id=""):
        keys = [self.key(name), f"{self.ns}lease:fence", self.stats_key(name), self.held_key,
                self.worker_key(worker), self.recent_key, f"{self.ns}lease:fence:{name}"]
        res = self._acquire(keys=keys, args=[owner, int(ttl_ms), worker, task_id or "", name,
                                             self.stats_retention_ms])
        if int(res[0]) == 1:
            return Acquired(True, token=int(res[1]))
        return Acquired(False, holder=res[1], token=int(res[2]) if res[2] else None,
                        expires_in_ms=int(res[3]) if res[3] is not None else None)

    def renew(self, name, owner, token, ttl_ms):
        return bool(self._renew(keys=[self.key(name), self.held_key],
                                args=[owner, str(token), int(ttl_ms), name]))

    def release(self, name, owner, token, worker=""):
        return bool(self._release(keys=[self.key(name), self.held_key, self.worker_key(worker),
                                        self.stats_key(name)], args=[owner, str(token), name]))

    def fence_worker(self, worker):
        return list(self._fence(keys=[self.worker_key(worker)], args=[self.ns, worker]))

    def record(self, name, stat, amount=1):
        # the counter may be the key's first field (a name never acquired, or stats already expired):
        # it gets the retention too, so no stats key lives forever
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.stats_key(name), stat, amount)
        pipe.pexpire(self.stats_key(name), self.stats_retention_ms)
        pipe.execute()

    # -- read side, for the CLI, metrics and the mirror --------------------------------------
    def holder(self, name: str) -> dict | None:
        data = self.client.hgetall(self.key(name))
        if not data:
            return None
        data["name"] = name
        data["token"] = int(data["token"])
        data["ttl_ms"] = self.client.pttl(self.key(name))
        return data

    def held(self) -> list[dict]:
        out = []
        for name in self.client.zrange(self.held_key, 0, -1):
            info = self.holder(name)
            if info is None:
                self.client.zrem(self.held_key, name)  # expired without release: tidy the index
                continue
            out.append(info)
        return out

    def stats(self) -> list[dict]:
        """Every name acquired within the stats retention, with its counters and current holder."""
        now_ms = int(time.time() * 1000)
        self.client.zremrangebyscore(self.recent_key, "-inf", now_ms - self.stats_retention_ms)
        names = sorted(self.client.zrange(self.recent_key, 0, -1))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.stats_key(name))
            pipe.hmget(self.key(name), "owner", "token", "worker")
        res = pipe.execute()
        out = []
        for i, name in enumerate(names):
            stats, (owner, token, worker) = res[2 * i], res[2 * i + 1]
            row = {"name": name, "holder": owner, "holder_worker": worker,
                   "token": int(token) if token else None, "last_token": int(stats.get("last_token") or 0)}
            for stat in ("acquisitions", "conflicts", "waits", "releases", "lost", "fenced"):
                row[stat] = int(stats.get(stat, 0))
            row["last_worker"] = stats.get("last_worker")
            out.append(row)
        return out


class Lease:
    """A held lease. ``token`` is the fencing token; ``lost`` turns true if renewal was refused."""

    def __init__(self, backend: LeaseBackend, name: str, owner: str, token: int, ttl: float, worker: str = ""):
        self.backend = backend
        self.name = name
        self.owner = owner
        self.token = token
        self.ttl = ttl
        self.worker = worker
        self.acquired_at = time.time()
        self.renewed_at = time.monotonic()
        self.released = False
        self.lost_event = threading.Event()
        self._on_lost: list[Callable[[Lease], None]] = []

    @property
    def lost(self) -> bool:
        return self.lost_event.is_set()

    def on_lost(self, callback: Callable[["Lease"], None]) -> None:
        self._on_lost.append(callback)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if this lease is no longer ours."""
        if self.lost:
            raise LeaseLost(self.name, self.token)

    def renew(self) -> bool:
        if self.released or self.lost:
            return False
        ok = self.backend.renew(self.name, self.owner, self.token, int(self.ttl * 1000))
        if ok:
            self.renewed_at = time.monotonic()
        else:
            self.mark_lost()
        return ok

    def mark_lost(self) -> None:
        if self.lost_event.is_set():
            return
        self.lost_event.set()
        logger.warning("lease %r (token %s) lost", self.name, self.token)
        try:
            self.backend.record(self.name, "lost")
        except redis.RedisError:
            pass
        for callback in self._on_lost:
            try:
                callback(self)
            except Exception:  # a callback must not stop the keeper
                logger.exception("lease-lost callback failed")

    def release(self) -> bool:
        """Release if still ours; returns False when it was no longer ours (expired or taken)."""
        if self.released:
            return False
        self.released = True
        keeper().forget(self)
        if self.lost:
            return False
        ok = self.backend.release(self.name, self.owner, self.token, self.worker)
        if not ok:
            self.mark_lost()
        return ok

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Lease {self.name!r} token={self.token} lost={self.lost}>"


class LeaseKeeper:
    """One thread per process renewing every held lease at about a third of its TTL."""

    def __init__(self):
        self._leases: dict[int, Lease] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._wake_at = 0.0  # when the keeper thread will next look, so keep() rarely needs to wake it

    def _after_fork(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's thread and leases are not ours
            self._leases = {}
            self._cond = threading.Condition()
            self._thread = None
            self._pid = os.getpid()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="sentinel-lease-keeper", daemon=True)
            self._thread.start()

    def keep(self, lease: Lease) -> None:
        self._after_fork()
        with self._cond:
            self._ensure_thread()
            self._leases[id(lease)] = lease
            if self._due(lease) < self._wake_at:
                self._cond.notify()

    def forget(self, lease: Lease) -> None:
        with self._cond:
            self._leases.pop(id(lease), None)

    def _due(self, lease: Lease) -> float:
        return lease.renewed_at + max(lease.ttl / 3.0, 0.05)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [l for l in self._leases.values() if self._due(l) <= now]
                if not due:
                    nxt = min((self._due(l) for l in self._leases.values()), default=now + 5)
                    self._wake_at = nxt
                    self._cond.wait(timeout=max(nxt - now, 0.01))
                    self._wake_at = 0.0
                    continue
            for lease in due:
                try:
                    if not lease.renew():
                        self.forget(lease)
                except redis.RedisError as exc:
                    logger.warning("lease %r renewal failed: %s", lease.name, exc)
                    if time.monotonic() - lease.renewed_at > lease.ttl:
                        lease.mark_lost()  # we cannot prove it is still ours
                        self.forget(lease)
                    else:
                        lease.renewed_at = time.monotonic() - lease.ttl / 3.0 + 0.5  # retry soon


_keeper = LeaseKeeper()


def keeper() -> LeaseKeeper:
    return _keeper


_backends: dict[tuple[str, str], RedisLeaseBackend] = {}


def get_backend(url: str | None = None, namespace: str | None = None) -> RedisLeaseBackend:
    cfg = get_config()
    url, namespace = url or cfg.redis_url, namespace or cfg.namespace
    backend = _backends.get((url, namespace))
    if backend is None:
        backend = _backends[(url, namespace)] = RedisLeaseBackend(
            get_redis(url), namespace, cfg.get("distributed.locking.statsRetentionSeconds"))
    return backend


def new_owner(worker: str = "", task_id: str = "") -> str:
    return f"{worker or 'client'}:{os.getpid()}:{task_id or '-'}:{uuid.uuid4().hex[:12]}"


def release_quietly(held: "Lease | None") -> None:
    """Give up a leader lease on the way out; an unreachable Redis lets it expire instead."""
    if held is None:
        return
    try:
        held.release()
    except redis.RedisError:
        pass


def backoff_delays(attempts: int, delay_ms: int) -> list[float]:
    """Seconds to wait before each retry: delay × 2^n, n = 0 .. attempts-1."""
    return [delay_ms / 1000.0 * (2 ** n) for n in range(attempts)]


def try_acquire(name: str, ttl: float, *, owner: str | None = None, worker: str = "", task_id: str = "",
                backend: LeaseBackend | None = None, renew: bool = True) -> Lease:
    """One atomic attempt; raise :class:`LockContended` if held."""
    backend = backend or get_backend()
    owner = owner or new_owner(worker, task_id)
    res = backend.acquire(name, owner, int(ttl * 1000), worker, task_id)
    if not res.ok:
        raise LockContended(name, res.holder, res.token, res.expires_in_ms)
    lease = Lease(backend, name, owner, res.token, ttl, worker)
    if renew:
        keeper().keep(lease)
    return lease


@contextlib.contextmanager
def lease(name: str, ttl: float | None = None, wait: float | list[float] | None = None, *,
          worker: str | None = None, backend: LeaseBackend | None = None) -> Iterator[Lease]:
    """Hold the lease ``name`` for the block, renewed in the background.

    ``wait``: seconds to keep trying (or an explicit list of delays); by default the configured
    back-off, ``retryDelayMs × 2^n`` for ``retryAttempts`` tries. Raises :class:`LockContended`.
    """
    cfg = get_config()
    ttl = ttl if ttl is not None else cfg.get("distributed.locking.ttlSeconds")
    worker = worker if worker is not None else cfg.worker_id
    backend = backend or get_backend()
    if wait is None:
        delays = backoff_delays(cfg.get("distributed.locking.retryAttempts"),
                                cfg.get("distributed.locking.retryDelayMs"))
    elif isinstance(wait, (int, float)):
        delays = _delays_within(float(wait))
    else:
        delays = list(wait)
    held = _acquire_waiting(name, ttl, delays, worker=worker, backend=backend)
    try:
        yield held
    finally:
        held.release()


def _delays_within(total: float) -> list[float]:
    delays, spent, step = [], 0.0, 0.05
    while spent < total:
        d = min(step, total - spent)
        delays.append(d)
        spent += d
        step = min(step * 2, 1.0)
    return delays


def _acquire_waiting(name: str, ttl: float, delays: list[float], *, worker: str, backend: LeaseBackend) -> Lease:
    for delay in [*delays, None]:
        try:
            return try_acquire(name, ttl, worker=worker, backend=backend)
        except LockContended:
            if delay is None:
                raise
            backend.record(name, "waits")
            time.sleep(delay)
    raise AssertionError("unreachable")
