"""Fenced leases: mutual exclusion with a TTL, owner-checked renew/release and fencing tokens.

A lease is a Redis hash that expires. Every acquisition takes its token from one counter per
namespace that never expires, and never hands out less than Redis' clock in milliseconds × 1000:
tokens for every name strictly increase, even across a Redis that restarted empty or a failover to
a replica that lagged (as long as Redis' clock does not go back by more than the time between two
acquisitions). A name leaves nothing behind but its stats, which expire ``statsRetentionSeconds``
after its last acquisition, so lock keys like ``build:{sha}`` do not make Redis grow without bound.
Renew and release compare owner and token atomically (Lua), so a holder that was paused past its
TTL can neither extend nor delete the lease of the holder that came after it. A process-wide
:class:`LeaseKeeper` thread renews every held lease at about a third of its TTL and marks it lost
when renewal is refused.

Speed: each operation is one EVALSHA on a private connection (state/direct.py), with the
namespace compiled into the script text, so Python passes only the name and the owner's values.
Reads (listing, stats, metrics) write nothing. A contended ``lease(..., wait=…)`` blocks in BLPOP
on the lease's wake-up list, which its release (or fencing) pushes to when someone waits: no
polling, no CPU while waiting; the wait also ends when the holder's TTL runs out.

Redis keys (under the namespace):
  lease:<name>          hash: owner, token, acquired, expires, worker, task_id, [waiting]
                        (PEXPIRE = ttl)
  lease:fence           the last token handed out, for all names (never expires); an acquisition
                        is acknowledged only once a replica has it (state/replication.py)
  lease:stats:<name>    hash: acquisitions, conflicts, waits, releases, lost, fenced, last_token, ...;
                        expires statsRetentionSeconds after the last acquisition
  leases:recent         zset: name -> its lease's expiry while held, the release time after (ms):
                        held leases are the scores ahead of now (listing and failover fencing
                        without SCAN), stats the names within the retention; trimmed on acquire
  lease:wake:<name>     list: one item pushed per release while someone waits (expires in 10 s)
  (worker:<id>:leases, leases:held, lease:fence:<name>: indexes and per-name counters of earlier
  versions; fencing a worker still reads the first, tokens are above the last by the clock floor)
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
from sentinel_celery.state.connection import get_redis, server_time_ms
from sentinel_celery.state.direct import DirectConnection, LuaScript
from sentinel_celery.state.replication import require_acknowledged, wait_for_replica

logger = logging.getLogger(__name__)


class LockContended(Exception):
    """The lease is held by someone else and waiting did not get it.

    ``args`` are the fields, not the message, so ``type(exc)(*exc.args)`` — how Celery's result
    backend rebuilds an exception — gives back the same exception."""

    def __init__(self, name: str, holder: str | None = None, token: int | None = None,
                 expires_in_ms: int | None = None):
        self.name, self.holder, self.token, self.expires_in_ms = name, holder, token, expires_in_ms
        super().__init__(name, holder, token, expires_in_ms)

    def __str__(self) -> str:
        if not self.holder:
            return f"lease '{self.name}' is held by another owner"
        expires = f", expires in {self.expires_in_ms / 1000:.1f}s" if self.expires_in_ms is not None else ""
        return f"lease '{self.name}' is held by another owner (held by {self.holder}, token {self.token}{expires})"


class LeaseLost(Exception):
    """The lease expired or was taken over while its holder was still running (``args``: name, token)."""

    def __init__(self, name: str, token: int | None = None):
        self.name, self.token = name, token
        super().__init__(name, token)

    def __str__(self) -> str:
        return f"lease '{self.name}' (token {self.token}) was lost: it expired or another owner holds it now"


# The scripts are compiled per namespace: %(P)s is the namespace as a Lua string literal,
# %(RETENTION)d the stats retention in ms. Tokens are formatted with %%d: a Lua number of this size
# would otherwise be written in exponent notation.
_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ARGV: name, owner, ttl ms, worker, task id, waiting ('1': the caller will wait for a release)
_ACQUIRE = """
local P, name, owner = %(P)s, ARGV[1], ARGV[2]
local key, stats = P .. 'lease:' .. name, P .. 'lease:stats:' .. name
local h = redis.call('HMGET', key, 'owner', 'token')
if h[1] then
  if h[1] == owner then return {1, h[2]} end  -- our own acquire, sent again after a broken connection
  redis.call('HINCRBY', stats, 'conflicts', 1)
  if ARGV[6] == '1' then
    redis.call('HSET', key, 'waiting', 1)
    redis.call('HINCRBY', stats, 'waits', 1)
  end
  redis.call('PEXPIRE', stats, %(RETENTION)d)
  return {0, h[1], h[2], redis.call('PTTL', key)}
end
""" + _CLOCK + """
local ttl = tonumber(ARGV[3])
local token = string.format('%%d', math.max(tonumber(redis.call('GET', P .. 'lease:fence') or '0') + 1, now * 1000))
redis.call('SET', P .. 'lease:fence', token)
redis.call('HSET', key, 'owner', owner, 'token', token, 'acquired', now, 'expires', now + ttl,
           'worker', ARGV[4], 'task_id', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', key, 'waiting', 1) end  -- a waiter got it: others may wait too
redis.call('PEXPIRE', key, ttl)
redis.call('HINCRBY', stats, 'acquisitions', 1)
redis.call('HSET', stats, 'last_holder', owner, 'last_worker', ARGV[4], 'last_acquired', now, 'last_token', token)
redis.call('PEXPIRE', stats, math.max(%(RETENTION)d, 2 * ttl))
local recent = P .. 'leases:recent'
redis.call('ZADD', recent, now + ttl, name)
redis.call('ZREMRANGEBYSCORE', recent, '-inf', now - %(RETENTION)d)
return {1, token}
"""

# ARGV: name, owner, token, ttl ms
_RENEW = """
local P, name = %(P)s, ARGV[1]
local key = P .. 'lease:' .. name
local h = redis.call('HMGET', key, 'owner', 'token')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] then return 0 end
""" + _CLOCK + """
local ttl = tonumber(ARGV[4])
redis.call('PEXPIRE', key, ttl)
redis.call('HSET', key, 'expires', now + ttl)
redis.call('ZADD', P .. 'leases:recent', now + ttl, name)
return 1
"""

_WAKE = """
local function wake(name)
  local list = P .. 'lease:wake:' .. name
  redis.call('RPUSH', list, 1)
  redis.call('PEXPIRE', list, 10000)
end
"""

# ARGV: name, owner, token
_RELEASE = """
local P, name = %(P)s, ARGV[1]
""" + _WAKE + """
local key = P .. 'lease:' .. name
local h = redis.call('HMGET', key, 'owner', 'token', 'waiting')
if h[1] ~= ARGV[2] or h[2] ~= ARGV[3] then return 0 end
""" + _CLOCK + """
redis.call('DEL', key)
redis.call('ZADD', P .. 'leases:recent', now, name)
redis.call('HINCRBY', P .. 'lease:stats:' .. name, 'releases', 1)
if h[3] then wake(name) end
return 1
"""

# Fence every lease a worker holds (failover): delete it only if that worker still holds it.
# ARGV: worker
_FENCE_WORKER = """
local P, worker = %(P)s, ARGV[1]
""" + _WAKE + _CLOCK + """
local recent = P .. 'leases:recent'
local names = redis.call('ZRANGEBYSCORE', recent, now, '+inf')
local legacy = P .. 'worker:' .. worker .. ':leases'
for _, name in ipairs(redis.call('SMEMBERS', legacy)) do table.insert(names, name) end
redis.call('DEL', legacy)
local released, seen = {}, {}
for _, name in ipairs(names) do
  local key = P .. 'lease:' .. name
  if not seen[name] and redis.call('HGET', key, 'worker') == worker then
    local waiting = redis.call('HGET', key, 'waiting')
    redis.call('DEL', key)
    redis.call('ZADD', recent, now, name)
    redis.call('HINCRBY', P .. 'lease:stats:' .. name, 'fenced', 1)
    if waiting then wake(name) end
    table.insert(released, name)
  end
  seen[name] = true
end
return released
"""


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal (bytes other than letters, digits and ``:_-./`` escaped)."""
    return '"' + "".join(chr(b) if chr(b).isalnum() or chr(b) in ":_-./" else f"\\{b:03d}"
                         for b in text.encode()) + '"'


@dataclass
class Acquired:
    ok: bool
    token: int | None = None
    holder: str | None = None
    expires_in_ms: int | None = None


class LeaseBackend:
    """What the rest of Sentinel needs from a lease store."""

    def acquire(self, name: str, owner: str, ttl_ms: int, worker: str = "", task_id: str = "",
                waiting: bool = False) -> Acquired:
        raise NotImplementedError

    def renew(self, name: str, owner: str, token: int, ttl_ms: int) -> bool:
        raise NotImplementedError

    def release(self, name: str, owner: str, token: int, worker: str = "") -> bool:
        raise NotImplementedError

    def fence_worker(self, worker: str) -> list[str]:
        raise NotImplementedError

    def record(self, name: str, stat: str, amount: int = 1) -> None:
        raise NotImplementedError

    def wait_for_release(self, name: str, timeout: float) -> bool:
        """Block up to ``timeout`` s until the lease is released; True if woken by a release."""
        time.sleep(timeout)
        return False


class RedisLeaseBackend(LeaseBackend):
    #: the longest single BLPOP: under the shared client's socket timeout
    MAX_BLOCK_S = 5.0

    def __init__(self, client: redis.Redis, namespace: str, stats_retention_s: float = 7 * 24 * 3600):
        self.client = client
        self.ns = namespace
        self.stats_retention_ms = int(stats_retention_s * 1000)
        self.direct = DirectConnection(client)
        values = {"P": lua_string(namespace), "RETENTION": self.stats_retention_ms}
        self._acquire = LuaScript(_ACQUIRE % values)
        self._renew = LuaScript(_RENEW % values)
        self._release = LuaScript(_RELEASE % values)
        self._fence = LuaScript(_FENCE_WORKER % values)

    def key(self, name: str) -> str:
        return f"{self.ns}lease:{name}"

    def stats_key(self, name: str) -> str:
        return f"{self.ns}lease:stats:{name}"

    def wake_key(self, name: str) -> str:
        return f"{self.ns}lease:wake:{name}"

    @property
    def recent_key(self) -> str:
        return f"{self.ns}leases:recent"

    def acquire(self, name, owner, ttl_ms, worker="", task_id="", waiting=False):
        """The one place a lease is taken: the acquire script on the private connection."""
        args = (name, owner, ttl_ms, worker, task_id, "1" if waiting else "0")
        # once acknowledged, the lease and its token must outlive a master switch: WAIT for a replica
        wait = wait_for_replica(self.client)
        if wait is None:
            res = self.direct.run(self._acquire, (), args)
        else:
            res, acked = self.direct.run(self._acquire, (), args, wait=wait)
            if res[0] == 1:
                require_acknowledged(self.client, acked, f"lease '{name}' acquisition",
                                     undo=lambda: self.release(name, owner, int(res[1]), worker))
        if res[0] == 1:
            return Acquired(True, token=int(res[1]))
        return Acquired(False, holder=res[1], token=int(res[2]) if res[2] else None,
                        expires_in_ms=int(res[3]) if res[3] is not None else None)

    def renew(self, name, owner, token, ttl_ms):
        return self.direct.run(self._renew, (), (name, owner, token, ttl_ms)) == 1

    def release(self, name, owner, token, worker=""):
        return self.direct.run(self._release, (), (name, owner, token)) == 1

    def fence_worker(self, worker):
        return list(self.direct.run(self._fence, (), (worker,)))

    def record(self, name, stat, amount=1):
        # the counter may be the key's first field (a name never acquired, or stats already expired):
        # it gets the retention too, so no stats key lives forever
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.stats_key(name), stat, amount)
        pipe.pexpire(self.stats_key(name), self.stats_retention_ms)
        pipe.execute()

    def wait_for_release(self, name, timeout):
        # BLPOP on the shared client (a blocking call must not hold the private connection)
        return self.client.blpop([self.wake_key(name)], timeout=min(max(timeout, 0.01), self.MAX_BLOCK_S)) \
            is not None

    # -- read side, for the CLI, metrics and the mirror: reads only ---------------------------
    def holder(self, name: str) -> dict | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key(name))
        pipe.pttl(self.key(name))
        data, ttl_ms = pipe.execute()
        return self._holder_row(name, data, ttl_ms)

    @staticmethod
    def _holder_row(name: str, data: dict, ttl_ms: int) -> dict | None:
        if not data or "token" not in data:
            return None
        data.pop("waiting", None)
        data["name"] = name
        data["token"] = int(data["token"])
        data["ttl_ms"] = ttl_ms
        return data

    def held(self) -> list[dict]:
        """Every lease held now, by name."""
        names = sorted(self.client.zrangebyscore(self.recent_key, server_time_ms(self.client), "+inf"))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.key(name))
            pipe.pttl(self.key(name))
        res = pipe.execute()
        rows = (self._holder_row(name, res[2 * i], res[2 * i + 1]) for i, name in enumerate(names))
        return [row for row in rows if row is not None]

    def held_by(self, worker: str) -> list[dict]:
        """The leases a worker holds now."""
        return [h for h in self.held() if h.get("worker") == worker]

    def stats(self) -> list[dict]:
        """Every name acquired within the stats retention, with its counters and current holder."""
        since = server_time_ms(self.client) - self.stats_retention_ms
        names = sorted(self.client.zrangebyscore(self.recent_key, since, "+inf"))
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
    return _attempt(name, ttl, owner or new_owner(worker, task_id), worker, task_id, backend or get_backend(),
                    renew, waiting=False)


def _attempt(name: str, ttl: float, owner: str, worker: str, task_id: str, backend: LeaseBackend, renew: bool,
             waiting: bool) -> Lease:
    res = backend.acquire(name, owner, int(ttl * 1000), worker, task_id, waiting)
    if not res.ok:
        raise LockContended(name, res.holder, res.token, res.expires_in_ms)
    held = Lease(backend, name, owner, res.token, ttl, worker)
    if renew:
        keeper().keep(held)
    return held


@contextlib.contextmanager
def lease(name: str, ttl: float | None = None, wait: float | list[float] | None = None, *,
          worker: str | None = None, backend: LeaseBackend | None = None) -> Iterator[Lease]:
    """Hold the lease ``name`` for the block, renewed in the background.

    ``wait``: seconds to keep waiting for it, or a list of the longest waits between attempts; by
    default ``retryDelayMs × 2^n`` for ``retryAttempts`` waits. A wait ends as soon as the holder
    releases (or is fenced) or its TTL runs out, then the lease is tried again; waiting sends no
    command but one blocking BLPOP per wake-up. Raises :class:`LockContended` when the time is up.
    """
    cfg = get_config()
    ttl = ttl if ttl is not None else cfg.get("distributed.locking.ttlSeconds")
    worker = worker if worker is not None else cfg.worker_id
    backend = backend or get_backend()
    if wait is None:
        waits = iter(backoff_delays(cfg.get("distributed.locking.retryAttempts"),
                                    cfg.get("distributed.locking.retryDelayMs")))
    elif isinstance(wait, (int, float)):
        waits = _time_left(float(wait))
    else:
        waits = iter(list(wait))
    held = _acquire_waiting(name, ttl, waits, worker=worker, backend=backend)
    try:
        yield held
    finally:
        held.release()


def _time_left(total: float) -> Iterator[float]:
    deadline = time.monotonic() + total
    while (left := deadline - time.monotonic()) > 0:
        yield left


def _acquire_waiting(name: str, ttl: float, waits: Iterator[float], *, worker: str, backend: LeaseBackend) -> Lease:
    owner = new_owner(worker)
    while True:
        longest = next(waits, None)
        try:
            return _attempt(name, ttl, owner, worker, "", backend, True, waiting=longest is not None)
        except LockContended as exc:
            if longest is None:
                raise
            expires_in = exc.expires_in_ms / 1000 + 0.005 if exc.expires_in_ms is not None else longest
            backend.wait_for_release(name, min(longest, max(expires_in, 0.0)))
