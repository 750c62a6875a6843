"""Shared memory: a namespaced JSON key-value store in Redis for workers and clients (memorySync).

    from sentinel_celery import memory
    memory.set("build:cache-url", "s3://...", namespace="config")
    memory.get("build:cache-url", namespace="config")
    entry = memory.entry("counter", namespace="jobs")           # value, version, ts, writer
    memory.set("counter", entry.value + 1, namespace="jobs", expected_version=entry.version)

Each write gets the next version of its namespace (one counter per namespace), so versions only
grow, also across delete and re-create: a write or delete with a stale ``expected_version`` is
refused with :class:`StaleWrite` (``expected_version=0`` means "only if it does not exist").
``distributed.memorySync.conflictResolution``:
  last_write_wins  a write without ``expected_version`` replaces whatever is there (default)
  version_check    every write and delete must name the version it replaces
:func:`update` is the read-modify-write loop that works in both modes.

Reads go through a per-process LRU cache of ``cacheSize`` entries. Every write publishes an event;
a subscriber thread evicts what changed, so another process's write is seen as soon as the event
arrives. An entry is also re-read when older than ``intervalMs``, which bounds staleness if events
are lost (and the cache is bypassed while the subscriber is not connected). :func:`watch` delivers
the same events to a callback or a queue.

Redis keys (under the namespace):
  mem:<ns>:entry:<key>   hash: value (JSON text), version, ts (Redis time, ms), writer; PEXPIRE if ttl
  mem:<ns>:keys          zset: key -> ts of its last write (listing; expired keys pruned on read)
  mem:<ns>:clock         counter: the last version handed out in <ns>
  mem:namespaces         set: namespaces ever written
  mem:events             pub/sub channel: {"namespace", "key", "version", "op", "writer"}
"""
from __future__ import annotations

import builtins
import json
import logging
import os
import queue as queue_mod
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import redis

from sentinel_celery.config import CONFLICT_RESOLUTIONS, Config, get_config
from sentinel_celery.state.connection import get_redis

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "default"


class StaleWrite(Exception):
    """A conditional write or delete named a version that is no longer the current one."""

    def __init__(self, namespace: str, key: str, expected: int, current: int | None):
        self.namespace, self.key, self.expected, self.current = namespace, key, expected, current
        now = "does not exist" if not current else f"is at version {current}"
        wanted = "to not exist" if expected == 0 else f"version {expected}"
        super().__init__(f"memory write refused: '{key}' in namespace '{namespace}' {now}, but the write "
                         f"expected {wanted}; read it again and retry")

    def __reduce__(self):
        return (StaleWrite, (self.namespace, self.key, self.expected, self.current))


class VersionRequired(ValueError):
    def __init__(self, namespace: str, key: str):
        super().__init__(f"memory write to '{key}' in namespace '{namespace}': conflictResolution is "
                         f"version_check, so pass expected_version (the version you read, 0 to create)")


@dataclass(frozen=True)
class Entry:
    key: str
    namespace: str
    value: Any
    version: int
    ts: int
    writer: str

    def as_dict(self) -> dict:
        return {"key": self.key, "namespace": self.namespace, "value": self.value, "version": self.version,
                "ts": self.ts, "writer": self.writer}


_SET = """
local cur = redis.call('HGET', KEYS[1], 'version')
if ARGV[2] ~= '' then
  local expected = tonumber(ARGV[2])
  if (expected == 0 and cur) or (expected ~= 0 and (not cur or tonumber(cur) ~= expected)) then
    return {0, cur and tonumber(cur) or 0}
  end
end
local version = redis.call('INCR', KEYS[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', version, 'ts', now, 'writer', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) else redis.call('PERSIST', KEYS[1]) end
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('PUBLISH', ARGV[7], cjson.encode({namespace = ARGV[5], key = ARGV[6], version = version,
                                             op = 'set', writer = ARGV[3]}))
return {1, version, now}
"""

_DELETE = """
local cur = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] ~= '' then
  local expected = tonumber(ARGV[1])
  if not cur or tonumber(cur) ~= expected then
    return {0, cur and tonumber(cur) or 0}
  end
end
redis.call('ZREM', KEYS[2], ARGV[4])
if not cur then return {1, 0} end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[5], cjson.encode({namespace = ARGV[3], key = ARGV[4], version = tonumber(cur),
                                             op = 'delete', writer = ARGV[2]}))
return {1, tonumber(cur)}
"""

_MISSING = object()


class SharedMemory:
    """The shared memory of one cluster (Redis URL + namespace), with this process's cache."""

    def __init__(self, client: redis.Redis, prefix: str, *, mode: str = "last_write_wins",
                 cache_size: int = 1000, refresh_ms: int = 5000, writer: str = ""):
        if mode not in CONFLICT_RESOLUTIONS:
            raise ValueError(f"conflictResolution {mode!r}; valid: {', '.join(CONFLICT_RESOLUTIONS)}")
        self.client = client
        self.prefix = prefix
        self.mode = mode
        self.cache_size = cache_size
        self.refresh_s = refresh_ms / 1000.0
        self.writer = writer or f"pid-{os.getpid()}"
        self.channel = f"{prefix}mem:events"
        self._set = client.register_script(_SET)
        self._delete = client.register_script(_DELETE)
        self._cache: OrderedDict[tuple[str, str], tuple[Entry | None, float]] = OrderedDict()
        self._seen: OrderedDict[tuple[str, str], tuple[int, str]] = OrderedDict()  # last event per key
        self._lock = threading.Lock()
        self._watches: builtins.list[Watch] = []
        self._subscriber: _Subscriber | None = None
        self._pid = os.getpid()

    @classmethod
    def from_config(cls, cfg: Config) -> "SharedMemory":
        sync = cfg.get("distributed.memorySync")
        return cls(get_redis(cfg.redis_url), cfg.namespace, mode=sync["conflictResolution"],
                   cache_size=sync["cacheSize"], refresh_ms=sync["intervalMs"],
                   writer=cfg.worker["workerId"] or f"client-{os.getpid()}")

    def _key(self, namespace: str, suffix: str) -> str:
        return f"{self.prefix}mem:{namespace}:{suffix}"

    # -- writes -----------------------------------------------------------------------------------
    def set(self, key: str, value: Any, namespace: str = DEFAULT_NAMESPACE, *,
            expected_version: int | None = None, ttl: float | None = None) -> Entry:
        """Store ``value`` (JSON-serialisable); returns the new entry. Raises :class:`StaleWrite`."""
        _check_name(namespace, key)
        if expected_version is None and self.mode == "version_check":
            raise VersionRequired(namespace, key)
        text = json.dumps(value)
        res = self._set(keys=[self._key(namespace, f"entry:{key}"), self._key(namespace, "keys"),
                              self._key(namespace, "clock"), f"{self.prefix}mem:namespaces"],
                        args=[text, "" if expected_version is None else int(expected_version), self.writer,
                              int(ttl * 1000) if ttl else 0, namespace, key, self.channel])
        if int(res[0]) == 0:
            raise StaleWrite(namespace, key, int(expected_version), int(res[1]))
        entry = Entry(key, namespace, json.loads(text), int(res[1]), int(res[2]), self.writer)
        self._remember(entry.namespace, entry.key, entry)
        return entry

    def delete(self, key: str, namespace: str = DEFAULT_NAMESPACE, *, expected_version: int | None = None) -> bool:
        """Remove ``key``; False if it did not exist. Raises :class:`StaleWrite`."""
        _check_name(namespace, key)
        if expected_version is None and self.mode == "version_check":
            raise VersionRequired(namespace, key)
        res = self._delete(keys=[self._key(namespace, f"entry:{key}"), self._key(namespace, "keys")],
                           args=["" if expected_version is None else int(expected_version), self.writer,
                                 namespace, key, self.channel])
        if int(res[0]) == 0:
            raise StaleWrite(namespace, key, int(expected_version), int(res[1]))
        with self._lock:
            self._cache.pop((namespace, key), None)
        return int(res[1]) > 0

    def update(self, key: str, fn: Callable[[Any], Any], namespace: str = DEFAULT_NAMESPACE, *,
               default: Any = None, attempts: int = 100, ttl: float | None = None) -> Entry:
        """Read-modify-write: ``fn(current value or default) -> new value``, retried on conflicts."""
        last: StaleWrite | None = None
        for _ in range(attempts):
            current = self.entry(key, namespace, cached=False)
            value = fn(current.value if current else default)
            try:
                return self.set(key, value, namespace, expected_version=current.version if current else 0, ttl=ttl)
            except StaleWrite as exc:
                last = exc
                time.sleep(0.001)
        raise last

    # -- reads ------------------------------------------------------------------------------------
    def entry(self, key: str, namespace: str = DEFAULT_NAMESPACE, *, cached: bool = True) -> Entry | None:
        _check_name(namespace, key)
        ck = (namespace, key)
        use_cache = cached and self.cache_size > 0 and self._cache_live()
        if use_cache:
            with self._lock:
                hit = self._cache.get(ck)
                if hit is not None and time.monotonic() - hit[1] < self.refresh_s:
                    self._cache.move_to_end(ck)
                    return hit[0]
        value, version, ts, writer = self.client.hmget(self._key(namespace, f"entry:{key}"),
                                                       "value", "version", "ts", "writer")
        entry = None if value is None else Entry(key, namespace, json.loads(value), int(version), int(ts),
                                                 writer or "")
        if use_cache:
            self._remember(namespace, key, entry)
        return entry

    def _remember(self, namespace: str, key: str, entry: Entry | None) -> None:
        """Cache a read (or our own write) unless an event already told of something newer."""
        sub = self._subscriber
        if self.cache_size <= 0 or sub is None or not sub.connected.is_set():
            return  # without change events a cached entry could go stale unnoticed
        ck = (namespace, key)
        with self._lock:
            seen = self._seen.get(ck)
            if seen is not None:
                version, op = seen
                if entry is None and op == "set":
                    return  # set after our read said absent
                if entry is not None and (version > entry.version or (op == "delete" and version >= entry.version)):
                    return  # changed or deleted after our read
            self._cache[ck] = (entry, time.monotonic())
            self._cache.move_to_end(ck)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def get(self, key: str, namespace: str = DEFAULT_NAMESPACE, default: Any = None) -> Any:
        e = self.entry(key, namespace)
        return default if e is None else e.value

    def entries(self, namespace: str = DEFAULT_NAMESPACE, prefix: str = "") -> builtins.list[Entry]:
        """Every live entry of ``namespace`` whose key starts with ``prefix``, by key."""
        index = self._key(namespace, "keys")
        keys = sorted(k for k in self.client.zrange(index, 0, -1) if k.startswith(prefix))
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(self._key(namespace, f"entry:{k}"), "value", "version", "ts", "writer")
        out, gone = [], []
        for k, (value, version, ts, writer) in zip(keys, pipe.execute(), strict=True):
            if value is None:
                gone.append(k)  # expired (ttl)
                continue
            out.append(Entry(k, namespace, json.loads(value), int(version), int(ts), writer or ""))
        if gone:
            self.client.zrem(index, *gone)
        return out

    def list(self, namespace: str = DEFAULT_NAMESPACE, prefix: str = "") -> dict[str, Any]:
        """``{key: value}`` of ``namespace``."""
        return {e.key: e.value for e in self.entries(namespace, prefix)}

    def namespaces(self) -> builtins.list[str]:
        return sorted(self.client.smembers(f"{self.prefix}mem:namespaces"))

    # -- cache and events -------------------------------------------------------------------------
    def _cache_live(self) -> bool:
        self._after_fork()
        sub = self._ensure_subscriber()
        return sub.connected.is_set()

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._cache.clear()
            self._lock = threading.Lock()
            self._subscriber = None
            self._watches = []

    def _ensure_subscriber(self) -> "_Subscriber":
        if self._subscriber is None or not self._subscriber.is_alive():
            self._subscriber = _Subscriber(self)
            self._subscriber.start()
            self._subscriber.connected.wait(2.0)
        return self._subscriber

    def _on_event(self, event: dict) -> None:
        ck = (str(event.get("namespace", "")), str(event.get("key", "")))
        version, op = int(event.get("version") or 0), event.get("op", "set")
        with self._lock:
            seen = self._seen.get(ck)
            if seen is None or version >= seen[0]:
                self._seen[ck] = (version, op)
                self._seen.move_to_end(ck)
                while len(self._seen) > 4 * max(self.cache_size, 1):
                    self._seen.popitem(last=False)
            hit = self._cache.get(ck)
            if hit is not None:
                cached = hit[0]
                # our own write comes back as an event too: keep what is already this new
                stale = (cached is None or cached.version < version) if op == "set" else \
                    (cached is not None and cached.version <= version)
                if stale:
                    del self._cache[ck]
        for w in builtins.list(self._watches):
            w._offer(event)

    def _on_disconnect(self) -> None:
        with self._lock:
            self._cache.clear()
            self._seen.clear()

    def watch(self, key: str | None = None, namespace: str = DEFAULT_NAMESPACE,
              callback: Callable[[dict], None] | None = None) -> "Watch":
        """Changes of ``key`` (or of the whole namespace when ``key`` is None), as event dicts
        ``{"namespace", "key", "version", "op", "writer"}``: passed to ``callback`` (in the
        subscriber thread) or, without one, queued for :meth:`Watch.get`. ``stop()`` ends it."""
        self._after_fork()
        w = Watch(self, namespace, key, callback)
        self._watches.append(w)
        sub = self._ensure_subscriber()
        if not sub.connected.wait(5.0):
            raise redis.ConnectionError("memory watch: could not subscribe to change events")
        return w

    def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber = None


class Watch:
    def __init__(self, memory: SharedMemory, namespace: str, key: str | None, callback):
        self.memory, self.namespace, self.key, self.callback = memory, namespace, key, callback
        self.events: queue_mod.Queue[dict] = queue_mod.Queue()

    def _offer(self, event: dict) -> None:
        if event.get("namespace") != self.namespace or (self.key is not None and event.get("key") != self.key):
            return
        if self.callback is None:
            self.events.put(event)
            return
        try:
            self.callback(event)
        except Exception:
            logger.exception("memory watch callback failed")

    def get(self, timeout: float | None = None) -> dict | None:
        try:
            return self.events.get(timeout=timeout)
        except queue_mod.Empty:
            return None

    def stop(self) -> None:
        try:
            self.memory._watches.remove(self)
        except ValueError:
            pass


class _Subscriber(threading.Thread):
    """Listens to memory events; evicts the cache and feeds watches. Reconnects on errors."""

    def __init__(self, memory: SharedMemory):
        super().__init__(name="sentinel-memory-events", daemon=True)
        self.memory = memory
        self.connected = threading.Event()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            pubsub = self.memory.client.pubsub()
            try:
                pubsub.subscribe(self.memory.channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if not message:
                        continue
                    if message.get("type") == "subscribe":
                        self.connected.set()  # confirmed: from here on no change goes unseen
                        delay = 0.1
                    elif message.get("type") == "message":
                        try:
                            event = json.loads(message["data"])
                        except (TypeError, ValueError):
                            continue
                        self.memory._on_event(event)
            except (redis.RedisError, OSError) as exc:
                logger.warning("memory events: %s; cache bypassed until reconnected", exc)
            finally:
                self.connected.clear()
                self.memory._on_disconnect()
                try:
                    pubsub.close()
                except Exception:
                    pass
            self._stopping.wait(delay)
            delay = min(delay * 2, 5.0)


def _check_name(namespace: str, key: str) -> None:
    if not namespace or not isinstance(namespace, str) or ":" in namespace:
        raise ValueError(f"memory namespace must be a non-empty string without ':', got {namespace!r}")
    if not key or not isinstance(key, str):
        raise ValueError(f"memory key must be a non-empty string, got {key!r}")


# -- module-level API over the process's configuration ----------------------------------------------
_default: dict[tuple, SharedMemory] = {}
_default_lock = threading.Lock()


def shared_memory(cfg: Config | None = None) -> SharedMemory:
    """The process's :class:`SharedMemory` for ``cfg`` (default: the current configuration)."""
    cfg = cfg or get_config()
    sync = cfg.get("distributed.memorySync")
    ident = (cfg.redis_url, cfg.namespace, sync["conflictResolution"], sync["cacheSize"], sync["intervalMs"],
             os.getpid())
    with _default_lock:
        mem = _default.get(ident)
        if mem is None:
            mem = _default[ident] = SharedMemory.from_config(cfg)
        return mem


def set(key: str, value: Any, namespace: str = DEFAULT_NAMESPACE, *, expected_version: int | None = None,
        ttl: float | None = None) -> Entry:  # noqa: A001 - the documented name
    return shared_memory().set(key, value, namespace, expected_version=expected_version, ttl=ttl)


def get(key: str, namespace: str = DEFAULT_NAMESPACE, default: Any = None) -> Any:
    return shared_memory().get(key, namespace, default)


def entry(key: str, namespace: str = DEFAULT_NAMESPACE) -> Entry | None:
    return shared_memory().entry(key, namespace)


def list(namespace: str = DEFAULT_NAMESPACE, prefix: str = "") -> dict[str, Any]:  # noqa: A001
    return shared_memory().list(namespace, prefix)


def entries(namespace: str = DEFAULT_NAMESPACE, prefix: str = "") -> builtins.list[Entry]:
    return shared_memory().entries(namespace, prefix)


def delete(key: str, namespace: str = DEFAULT_NAMESPACE, *, expected_version: int | None = None) -> bool:
    return shared_memory().delete(key, namespace, expected_version=expected_version)


def update(key: str, fn: Callable[[Any], Any], namespace: str = DEFAULT_NAMESPACE, *, default: Any = None,
           ttl: float | None = None) -> Entry:
    return shared_memory().update(key, fn, namespace, default=default, ttl=ttl)


def watch(key: str | None = None, namespace: str = DEFAULT_NAMESPACE,
          callback: Callable[[dict], None] | None = None) -> Watch:
    return shared_memory().watch(key, namespace, callback)
