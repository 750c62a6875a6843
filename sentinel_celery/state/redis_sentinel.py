"""Sentinel's own Redis client for a Redis Sentinel deployment (``redis+sentinel://``).

redis-py's ``Sentinel(...).master_for(...)``: every new connection asks the sentinels where the
master is, and a connection to a master that was demoted (``READONLY``) is dropped, so after a
master switch the next command goes to the new master. A command that meets the switch itself is
retried with back-off for up to ``redis.failoverWaitSeconds`` (:class:`RetryWithin`) (Sentinel promotes a replica after
``down-after-milliseconds`` plus an election) instead of failing the task or the duty that sent it.
:func:`master_not_found` turns redis-py's ``MasterNotFoundError`` into one line that says whether
no sentinel answered or none knows the master name. Owns no Redis keys.
"""
from __future__ import annotations

import socket
import threading
import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection

from sentinel_celery.redis_url import SentinelURL

__all__ = ["MasterNotFoundError", "master_client", "master_not_found", "RetryWithin"]

BACKOFF_CAP_S = 1.0
BACKOFF_BASE_S = 0.05

#: deployments (sentinels and master name) this process has reached: only those are waited for (a
#: switch under way); a master never reached is a configuration problem or a cluster that is down
_reached: set[str] = set()
#: the deadline of the outermost retry loop running in this thread, which nested loops share
_loop = threading.local()


class RetryWithin(Retry):
    """redis-py's ``Retry``, bounded by time instead of a count.

    redis-py nests retries (a command's retry around a connect's retry, each connection with its
    own copy), so a count would multiply; one deadline from the first failure, shared by the loops
    nested in one thread, does not."""

    def __init__(self, within_s: float, master: str):
        """``master``: the deployment's identity (its sentinels and master name)."""
        super().__init__(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), -1,
                         (redis.ConnectionError, redis.TimeoutError, socket.timeout))
        self.within_s = within_s
        self.master = master

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        self._backoff.reset()
        failures, owner = 0, False
        try:
            while True:
                try:
                    result = do()
                    _reached.add(self.master)
                    return result
                except self._supported_errors as error:
                    failures += 1
                    if with_failure_count:
                        fail(error, failures)
                    else:
                        fail(error)
                    if is_retryable is not None and not is_retryable(error):
                        raise
                    if isinstance(error, MasterNotFoundError) and self.master not in _reached:
                        raise
                    now = time.monotonic()
                    if getattr(_loop, "deadline", None) is None:
                        _loop.deadline, owner = now + self.within_s, True
                    if now >= _loop.deadline:
                        raise
                    time.sleep(min(self._backoff.compute(failures), _loop.deadline - now))
        finally:
            if owner:
                _loop.deadline = None


class FollowingConnection(SentinelManagedConnection):
    """redis-py's sentinel-managed connection, asking the sentinels again on every reconnect.

    redis-py asks them when a connection is taken from the pool, but a command retried on the
    same connection (``Retry``) reconnects to the address it had: the dead master, until the retries
    run out. Here every (re)connect goes to the master the sentinels name now."""

    def connect_check_health(self, check_health=True, retry_socket_connect=True):
        if self._sock or not self.connection_pool.is_master:
            return super().connect_check_health(check_health, retry_socket_connect)

        def attempt():
            self.host, self.port = self.connection_pool.get_master_address()
            super(FollowingConnection, self).connect_check_health(check_health, retry_socket_connect=False)
        self.retry.call_with_retry(attempt, lambda error: self.disconnect())


def _sentinel(parsed: SentinelURL, timeout_s: float) -> Sentinel:
    sentinel_kwargs = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if parsed.sentinel_password:
        sentinel_kwargs["password"] = parsed.sentinel_password
    return Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)


def master_client(parsed: SentinelURL, *, failover_wait_s: float, decode_responses: bool = True,
                  socket_timeout: float = 10, socket_connect_timeout: float = 5,
                  health_check_interval: int = 30) -> redis.Redis:
    """A client of the current master of ``parsed.master``; follows a master switch."""
    return _sentinel(parsed, min(socket_connect_timeout, 2.0)).master_for(
        parsed.master, redis_class=redis.Redis, db=parsed.db, username=parsed.username, password=parsed.password,
        decode_responses=decode_responses, socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout, health_check_interval=health_check_interval,
        retry=RetryWithin(failover_wait_s, parsed.where()), connection_class=FollowingConnection)


def master_not_found(parsed: SentinelURL, timeout_s: float = 2.0) -> str:
    """One line on why no master was found: no sentinel answered, or none knows the name."""
    answered, known = [], set()
    for host, port in parsed.sentinels:
        client = redis.Redis(host=host, port=port, password=parsed.sentinel_password, socket_timeout=timeout_s,
                             socket_connect_timeout=timeout_s, decode_responses=True)
        try:
            known.update(client.sentinel_masters())
            answered.append(f"{host}:{port}")
        except redis.RedisError:
            continue
        finally:
            client.close()
    if not answered:
        return f"no sentinel reachable at {','.join(f'{h}:{p}' for h, p in parsed.sentinels)}"
    if parsed.master not in known:
        names = ", ".join(sorted(known)) or "none"
        return (f"the sentinels at {','.join(answered)} know no master named '{parsed.master}' "
                f"(they know: {names})")
    return f"the sentinels at {','.join(answered)} report master '{parsed.master}' down (a failover may be under way)"
