"""Failover in about a second when a worker's process dies: its Redis connection closes at once.

Every worker keeps one recorded connection (state/live_connections.py). The monitor leader looks at all of
them every ``WATCH_S`` (one HGETALL and one ``CLIENT LIST ID …``); every other monitor looks only at
the leader's, every ``FOLLOW_S``, so a dead leader is replaced as fast. A worker whose connection is
gone is declared dead at once only when that is confirmed:

* on the same machine and pid namespace as the watcher: its process no longer exists (its pid is
  unused, a zombie, or reused by a later process: worker/liveness.py);
* elsewhere: the connection has stayed gone for ``failover.connectionGraceMs`` (a connection Redis
  closed is reopened by a live worker within ~0.1 s), another worker on the same machine still has
  its connection (so it is not that machine's network), it has missed a heartbeat (one interval
  plus the grace: a live worker beats over another connection), the monitor's reconnect grace
  (state/reconnect.py) is not running, and it does not answer a ping.

Anything else — a Redis restart or master switch (every connection goes at once, the watcher's
own too: it starts over from what it sees after reconnecting), a paused or hung process (its socket
stays open), a partitioned host — is left to the heartbeat and the ping (failover.py). Declaring
and recovering go through the same atomic steps as the heartbeat path, so both can run at once.

Redis keys: state/live_connections.py's; declares and recovers through cluster/failover.py.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import redis

from sentinel_celery.cluster.failover import Failover
from sentinel_celery.state.connection import server_time_ms
from sentinel_celery.state.live_connections import LiveConnection, LivenessIndex, pid_scope
from sentinel_celery.state.registry import OFFLINE
from sentinel_celery.worker.liveness import incarnation_gone

logger = logging.getLogger(__name__)

WATCH_S = 0.25
FOLLOW_S = 0.25
PING_S = 0.3


class ConnectionWatch:
    def __init__(self, failover: Failover, *, grace_ms: int, interval_ms: int, is_leader: Callable[[], bool],
                 leader: Callable[[], str | None], on_event: Callable[[dict], None] | None = None):
        self.failover = failover
        self.interval_ms = interval_ms
        self.index = LivenessIndex(failover.client, failover.ns)
        self.grace_s = grace_ms / 1000.0
        self.is_leader = is_leader
        self.leader = leader
        self.on_event = on_event
        self.scope = pid_scope()
        self._missing_since: dict[tuple[str, str, int], float] = {}

    def reset(self) -> None:
        """Forget what was missing: after our own connection to Redis broke, start over."""
        self._missing_since.clear()

    def step(self) -> list[dict]:
        if self.is_leader():
            records = self.index.all()
        else:
            leader = self.leader()
            record = self.index.get(leader) if leader else None
            records = [record] if record is not None else []
        if not records:
            self._missing_since.clear()
            return []
        present = self.index.connected([r.client_id for r in records])
        now = time.monotonic()
        missing = [r for r in records if r.client_id not in present]
        keys = {(r.worker_id, r.instance, r.client_id) for r in missing}
        for key in list(self._missing_since):
            if key not in keys:
                del self._missing_since[key]
        events = []
        for record in missing:
            since = self._missing_since.setdefault((record.worker_id, record.instance, record.client_id), now)
            reason = self._confirmed_dead(record, records, present, now - since)
            if reason:
                event = self._fail_over(record, reason)
                if event is not None:
                    events.append(event)
        return events

    def _confirmed_dead(self, record: LiveConnection, records: list[LiveConnection], present: set[int],
                        gone_s: float) -> str | None:
        if self.scope and record.pid_scope == self.scope:
            if record.pid == os.getpid():
                return None  # this process: alive (its connection is reopening)
            info = self.failover.registry.get(record.worker_id)
            started = int(info["started"] or 0) if info is not None else 0
            if incarnation_gone(record.hostname, record.pid, started, this_host=record.hostname):
                return (f"its process is gone: Redis connection closed and pid {record.pid} no longer runs "
                        f"on {record.hostname or 'its host'}")
            return None  # alive (paused, hung, or reconnecting): the heartbeat path decides
        if gone_s < self.grace_s or self.failover.grace.covers(server_time_ms(self.failover.client)):
            return None  # not gone long enough, or Redis itself was away: nobody could reconnect or beat
        machine = record.pid_scope.split(":", 1)[0]
        siblings = [r for r in records if r.worker_id != record.worker_id and r.client_id in present
                    and ((machine and r.pid_scope.split(":", 1)[0] == machine)
                         or (not machine and record.hostname and r.hostname == record.hostname))]
        if not siblings:
            return None
        info = self.failover.registry.get(record.worker_id)
        if info is None or not info["nodename"]:
            return None
        silent_ms = server_time_ms(self.failover.client) - int(info["last_beat"] or 0)
        if silent_ms < self.interval_ms + self.grace_s * 1000:
            return None  # it still beats (over another connection): alive
        if info["nodename"] in self.failover._ping([info["nodename"]], PING_S):
            return None
        return (f"its process is gone: Redis connection closed {gone_s:.1f}s ago and not reopened, no heartbeat "
                f"for {silent_ms / 1000:.1f}s, no answer to ping, while {siblings[0].worker_id} on the same host "
                f"is connected")

    def _fail_over(self, record: LiveConnection, reason: str) -> dict | None:
        with self.failover.lock:  # not beside this process's monitor pass, which would recover it too
            return self._declare_and_recover(record, reason)

    def _declare_and_recover(self, record: LiveConnection, reason: str) -> dict | None:
        info = self.failover.registry.get(record.worker_id)
        if info is None or info["instance"] != record.instance or info.status == OFFLINE:
            self.index.forget(record.worker_id, record.instance)  # stopped, replaced or already recovered
            return None
        dead = self.failover.declare_dead(info, int(info["last_beat"] or 0), reason=reason, silent_ms=0)
        if dead is None:
            return None
        event = self.failover.recover_claimed(dead)  # None: another monitor's pass is recovering it
        self.index.forget(record.worker_id, record.instance)
        if event is None:
            return None
        if self.on_event is not None:
            self.on_event(event)
        return event

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self.step()
            except redis.RedisError as exc:
                self.reset()
                logger.debug("sentinel: connection watch: Redis: %s", exc)
            except Exception:
                logger.exception("sentinel: connection watch failed")
            stopping.wait(WATCH_S if self.is_leader() else FOLLOW_S)


def start_watch(failover: Failover, cfg, stopping: threading.Event, *, is_leader: Callable[[], bool],
                leader: Callable[[], str | None], on_event=None) -> threading.Thread | None:
    """Run a :class:`ConnectionWatch` in a thread until ``stopping`` is set (None if switched off)."""
    if not cfg.get("distributed.failover.connectionWatch"):
        return None
    watch = ConnectionWatch(failover, grace_ms=cfg.get("distributed.failover.connectionGraceMs"),
                            interval_ms=cfg.get("distributed.heartbeat.intervalMs"), is_leader=is_leader, leader=leader, on_event=on_event)
    thread = threading.Thread(target=watch.run, args=(stopping,), name="sentinel-connection-watch", daemon=True)
    thread.start()
    return thread
