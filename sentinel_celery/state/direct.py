"""A private Redis connection for hot paths: Lua scripts by EVALSHA with no pool checkout per call.

:class:`DirectConnection` keeps one connection of its own (made like the client's pool makes them:
same host, auth, TLS, Sentinel master discovery) and runs :class:`LuaScript` objects on it — one
EVALSHA per call, the full text once on ``NOSCRIPT`` (a restarted or failed-over Redis). When asked
it sends ``WAIT <replicas> <ms>`` right behind the script *on the same connection*, so the caller
learns how many replicas have the write before going on (``run(..., wait=(1, 100))``).

Thread-safe (one exchange at a time); a forked child opens its own connection. A connection that
broke while idle (Redis restarted) is reopened and the call sent once more, as redis-py's own
retry does: scripts run here must tolerate that (the lease scripts do: an acquire retried by its
own owner returns the token it already got).

Owns no Redis keys.
"""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Sequence

import redis
from redis.exceptions import NoScriptError


class LuaScript:
    """A script's text and its SHA1, computed once."""

    __slots__ = ("text", "sha")

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class DirectConnection:
    def __init__(self, client: redis.Redis):
        self.client = client
        self._pool = client.connection_pool
        self._conn = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _connection(self):
        if self._pid != os.getpid():  # forked: the parent's socket and lock are not ours
            self._pid, self._conn, self._lock = os.getpid(), None, threading.Lock()
        if self._conn is None:
            self._conn = self._pool.connection_class(**self._pool.connection_kwargs)
        return self._conn

    def run(self, script: LuaScript, keys: Sequence[Any] = (), args: Sequence[Any] = (), *,
            wait: tuple[int, int] | None = None) -> Any:
        """EVALSHA ``script``; with ``wait=(replicas, timeout_ms)`` also WAIT on this connection.

        Returns the script's reply; with ``wait``, ``(reply, replicas that acknowledged)``.
        """
        if self._pid != os.getpid():
            self._connection()
        with self._lock:
            try:
                return self._exchange(script, keys, args, wait)
            except (redis.ConnectionError, redis.TimeoutError):
                self._drop()
                return self._exchange(script, keys, args, wait)  # once: an idle socket Redis had closed

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None

    def _exchange(self, script: LuaScript, keys, args, wait):
        conn = self._connection()
        try:
            try:
                reply, acked = self._send(conn, "EVALSHA", script.sha, keys, args, wait)
            except NoScriptError:
                reply, acked = self._send(conn, "EVAL", script.text, keys, args, wait)
        except redis.ResponseError:
            raise  # every reply was read: the connection is fine
        except BaseException:
            self._drop()  # a reply may be left unread on the socket
            raise
        return reply if wait is None else (reply, acked)

    @staticmethod
    def _send(conn, verb: str, body: str, keys, args, wait):
        command = (verb, body, len(keys), *keys, *args)
        if wait is None:
            conn.send_packed_command(conn.pack_command(*command), check_health=False)
            return conn.read_response(), None
        conn.send_packed_command(conn.pack_commands([command, ("WAIT", *wait)]), check_health=False)
        try:
            reply = conn.read_response()
        except redis.ResponseError:
            conn.read_response()  # WAIT's reply, so the socket is clean
            raise
        return reply, int(conn.read_response())
