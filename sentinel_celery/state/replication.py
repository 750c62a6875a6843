"""Writes that must survive a master switch: ``WAIT 1 <ms>`` for a replica, when replicas exist.

Redis replicates asynchronously, so a promoted replica may lack the master's last writes. For the
writes whose loss would break a promise — a lease acquisition and its fencing token, a failover
record — ``WAIT 1 <ms>`` goes on the same connection, right behind the write (``WAIT`` counts only
the writes of its own connection): the lease scripts through state/direct.py's ``run(wait=...)``
with :func:`wait_for_replica` / :func:`require_acknowledged`, pipelined writes through
:func:`replicated`. The write is acknowledged to its caller only when a replica has it. A master without replicas (a single Redis)
pays nothing: the replica count comes from ``INFO replication``, cached for a few seconds per
client, and is read again before a failed ``WAIT`` counts as one (a switch leaves the new master
without replicas for a while). Owns no Redis keys.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import redis

logger = logging.getLogger(__name__)

WAIT_MS = 1000
REPLICAS_CACHE_S = 5.0


class NotReplicated(redis.RedisError):
    """No replica acknowledged a write that must survive a master switch."""

    def __init__(self, what: str, wait_ms: int, replicas: int):
        self.what, self.wait_ms, self.replicas = what, wait_ms, replicas
        super().__init__(f"{what}: none of the master's {replicas} replica(s) acknowledged it within {wait_ms} ms "
                         f"(WAIT 1 {wait_ms}); not acknowledged, as a master switch could lose it")

    def __reduce__(self):
        return (NotReplicated, (self.what, self.wait_ms, self.replicas))


class ReplicaCount:
    """``connected_slaves`` of a client's master, read at most every ``cache_s`` seconds."""

    def __init__(self, cache_s: float = REPLICAS_CACHE_S):
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[float, int]] = {}  # id(client) -> (monotonic, count)

    def get(self, client: redis.Redis, fresh: bool = False) -> int:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(id(client))
        if seen is not None and not fresh and now - seen[0] < self.cache_s:
            return seen[1]
        count = int(client.info("replication").get("connected_slaves", 0))
        with self._lock:
            self._seen[id(client)] = (now, count)
        return count


replica_count = ReplicaCount()


def wait_for_replica(client: redis.Redis, wait_ms: int = WAIT_MS) -> tuple[int, int] | None:
    """``(1, wait_ms)`` — the WAIT to send behind a write — when ``client``'s master has replicas."""
    return (1, wait_ms) if replica_count.get(client) else None


def require_acknowledged(client: redis.Redis, acked: int, what: str, *, wait_ms: int = WAIT_MS,
                         undo: Callable[[], None] | None = None) -> None:
    """After ``WAIT``: raise :class:`NotReplicated` (having called ``undo``) unless a replica has the
    write or the master has no replica left to wait for (a switch leaves the new one without)."""
    if acked >= 1:
        return
    replicas = replica_count.get(client, fresh=True)
    if not replicas:
        return
    logger.warning("sentinel: %s was not acknowledged by any of %d replica(s) within %d ms", what, replicas, wait_ms)
    if undo is not None:
        try:
            undo()
        except redis.RedisError:
            pass
    raise NotReplicated(what, wait_ms, replicas)


def replicated(client: redis.Redis, write: Callable[[redis.client.Pipeline], None], what: str, *,
               wait_ms: int = WAIT_MS) -> list:
    """Queue ``write`` on a pipeline of ``client`` with ``WAIT 1 wait_ms`` behind it when the master
    has replicas; returns the write's results, or raises :class:`NotReplicated`."""
    wait = wait_for_replica(client, wait_ms)
    pipe = client.pipeline(transaction=False)
    write(pipe)
    if wait is not None:
        pipe.execute_command("WAIT", *wait)
    results = pipe.execute()
    if wait is None:
        return results
    require_acknowledged(client, int(results[-1]), what, wait_ms=wait_ms)
    return results[:-1]
