"""Process liveness through Redis itself: each worker keeps one connection open and says which it is.

When a process dies the kernel closes its sockets and Redis drops its connections at once, seconds
before its heartbeat goes stale. A worker's :class:`LivenessConnection` is one connection of its
own, named ``sentinel-live:<instance>`` (CLIENT SETNAME) and recorded with its ``CLIENT ID``; a
thread keeps it open (a BLPOP on a key nobody pushes, renewed every few seconds) and reconnects at
once when Redis closes it (a restart, a master switch), recording the new id. :class:`LivenessIndex`
is what a monitor reads: every worker's recorded connection, and which of those ids Redis still has
(``CLIENT LIST ID …``, one command for all of them).

Redis keys (under the namespace):
  liveness        hash: worker id -> JSON {instance, client_id, hostname, pid, pid_scope} of its
                  live connection (pid_scope: boot id and pid namespace, so a pid is only compared
                  by a process that sees the same pids)
  liveness:idle   the key the connection blocks on (never written)
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import redis

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveConnection:
    worker_id: str
    instance: str
    client_id: int
    hostname: str = ""
    pid: int = 0
    pid_scope: str = ""


def pid_scope() -> str:
    """Which processes' pids this process sees: the kernel boot and the pid namespace ("" if unknown)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


_FORGET = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw)['instance'] == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class LivenessIndex:
    def __init__(self, client: redis.Redis, namespace: str):
        self.client = client
        self.ns = namespace
        self._forget = client.register_script(_FORGET)

    @property
    def key(self) -> str:
        return f"{self.ns}liveness"

    @property
    def idle_key(self) -> str:
        return f"{self.ns}liveness:idle"

    def record(self, conn: LiveConnection) -> None:
        self.client.hset(self.key, conn.worker_id, json.dumps(
            {"instance": conn.instance, "client_id": conn.client_id, "hostname": conn.hostname, "pid": conn.pid,
             "pid_scope": conn.pid_scope}))

    def forget(self, worker_id: str, instance: str) -> bool:
        """Drop a worker's record if it is still this instance's (a clean stop, a recovered death)."""
        return bool(self._forget(keys=[self.key], args=[worker_id, instance]))

    def get(self, worker_id: str) -> LiveConnection | None:
        return self._parse(worker_id, self.client.hget(self.key, worker_id))

    def all(self) -> list[LiveConnection]:
        rows = (self._parse(w, raw) for w, raw in self.client.hgetall(self.key).items())
        return [row for row in rows if row is not None]

    @staticmethod
    def _parse(worker_id: str, raw: str | None) -> LiveConnection | None:
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return LiveConnection(worker_id, str(data["instance"]), int(data["client_id"]),
                                  str(data.get("hostname") or ""), int(data.get("pid") or 0),
                                  str(data.get("pid_scope") or ""))
        except (TypeError, ValueError, KeyError):
            return None

    def connected(self, client_ids: list[int]) -> set[int]:
        """Which of these client ids have a connection to Redis now."""
        if not client_ids:
            return set()
        listing = self.client.execute_command("CLIENT", "LIST", "ID", *client_ids)
        if isinstance(listing, bytes):
            listing = listing.decode()
        found = set()
        for line in listing.splitlines():
            for part in line.split(" "):
                if part.startswith("id="):
                    found.add(int(part[3:]))
                    break
        return found


class LivenessConnection:
    """A worker process's named connection, kept open by a thread; see the module docstring."""

    #: how long one BLPOP blocks: under the client's socket timeout
    BLOCK_S = 5
    #: the wait between reconnect attempts while Redis does not answer
    RETRY_S = 0.1

    def __init__(self, client: redis.Redis, namespace: str, worker_id: str, instance: str, hostname: str, pid: int):
        self.index = LivenessIndex(client, namespace)
        self.worker_id = worker_id
        self.instance = instance
        self.hostname = hostname
        self.pid = pid
        self._pool = client.connection_pool
        self._conn = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.client_id: int | None = None
        self._scope = pid_scope()

    def record(self) -> LiveConnection:
        return LiveConnection(self.worker_id, self.instance, self.client_id or 0, self.hostname, self.pid,
                              self._scope)

    def start(self) -> None:
        self._connect()  # the first one synchronously: recorded before the worker takes tasks
        self._thread = threading.Thread(target=self._run, name="sentinel-liveness", daemon=True)
        self._thread.start()

    def rename(self, instance: str) -> None:
        """The worker re-registered as a new incarnation: record the connection under it."""
        self.instance = instance
        if self.client_id is not None:
            self.index.record(self.record())

    def stop(self) -> None:
        self._stopping.set()
        try:
            self.index.forget(self.worker_id, self.instance)
        except redis.RedisError:
            pass
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()  # ends the BLPOP the thread is in

    def _connect(self) -> None:
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        conn.send_command("CLIENT", "SETNAME", f"sentinel-live:{self.instance}")
        conn.read_response()
        conn.send_command("CLIENT", "ID")
        self.client_id = int(conn.read_response())
        self._conn = conn
        self.index.record(self.record())

    def _run(self) -> None:
        while not self._stopping.is_set():
            conn = self._conn
            try:
                if conn is None:
                    self._connect()
                    logger.info("sentinel: liveness connection to Redis open again (client id %s)", self.client_id)
                    continue
                conn.send_command("BLPOP", self.index.idle_key, self.BLOCK_S, check_health=False)
                conn.read_response()
            except (redis.RedisError, OSError, AttributeError):
                if self._stopping.is_set():
                    return
                if conn is not None:
                    conn.disconnect()
                self._conn = None
                time.sleep(self.RETRY_S)
