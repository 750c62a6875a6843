"""Failover: declare a silent worker dead, fence it, give its messages back, record what happened.

A worker whose last beat is older than ``heartbeat.staleThresholdMs`` is *stale*. It is pinged
(``app.control.ping``), so a slow Redis or a long GC pause does not cost a failover; only if it does
not answer within ``heartbeat.pingTimeoutMs`` is it declared dead: one Lua script moves it to offline
if it is still the same incarnation and still silent, and leaves a pending-recovery record.
Recovery (with ``heartbeat.recoveryEnabled``):

1. fence its leases: their fencing counters move on, so a late renew or release is refused;
2. give back every message it had taken (tracked by delivery tag, see state/tags.py and broker/redis_transport.py) — running,
   prefetched and ETA alike — at the head of its queue under a new tag (see broker/redis_unacked.py), and move
   what waits in its direct queue back home (rebalance.py, when load balancing is installed);
3. count, per task, how often it was running on a worker that died; the time it has killed
   ``failover.maxRecoveries`` workers it goes to the dead-letter hash and its result is marked
   FAILURE (:class:`WorkerLostRepeatedly`) instead of killing more workers;
4. store an event for the CLI (``sentinel failover history``) and the GitHub mirror.

After a Redis outage (restart, failover, network cut) nobody is declared dead for silence the monitor itself
could not have heard: staleness counts from the moment Redis answered again (state/reconnect.py), and a
worker that does not answer a ping while its consumer may still be reconnecting is asked again later.

Every step is idempotent and safe when two monitors race (see broker/redis_unacked.py). A monitor that stops
half-way leaves the pending record behind, and the next pass finishes the job.

A message whose task's outcome was stored after it was delivered (the worker died between storing the
result and acking) is not run again: it is removed and listed as ``already_finished`` in the event.

Which messages were *running*: the dead worker's messages whose ETA is not in the future, oldest
delivery first, up to its concurrency. Prefetched ones are given back without being counted.

Redis keys: the records of state/failovers.py; the registry's; the dead incarnation's tags;
  failover:recovering:<instance>  the monitor carrying out that recovery now (expires after 60 s), so two
                                  monitors (or a monitor and a connection watch) never record it twice
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

import redis
from celery import states

from sentinel_celery.broker.base import Broker, Unacked
from sentinel_celery.broker.factory import broker_for
from sentinel_celery.cluster.rebalance import home_queue
from sentinel_celery.config import Config
from sentinel_celery.routing import direct_queue_name
from sentinel_celery.state import outbox
from sentinel_celery.state.connection import get_redis, server_time_ms
from sentinel_celery.state.failovers import FailoverRecords
from sentinel_celery.state.leases import RedisLeaseBackend
from sentinel_celery.state.reconnect import ReconnectGrace
from sentinel_celery.state.registry import OFFLINE, ONLINE, STALE, RedisRegistry, WorkerInfo
from sentinel_celery.state.tags import RedisTagTracker

logger = logging.getLogger(__name__)


class WorkerLostRepeatedly(Exception):
    """The task was running on a worker that died too many times; it was not run again."""


class WorkerStillAlive(RuntimeError):
    """An operator asked to clean up a worker that is still beating."""


@dataclass
class DeadWorker:
    """One incarnation declared dead: what recovery needs to know about it."""

    worker_id: str
    instance: str
    nodename: str = ""
    hostname: str = ""
    pid: int = 0
    incarnation: int = 0
    concurrency: int = 1
    last_beat: int = 0
    declared_at: int = 0
    by: str = ""
    reason: str = ""

    @classmethod
    def from_info(cls, info: WorkerInfo, *, by: str, reason: str, last_beat: int | None = None) -> "DeadWorker":
        return cls(worker_id=info.id, instance=info["instance"] or "", nodename=info["nodename"] or "",
                   hostname=info["hostname"] or "", pid=int(info["pid"] or 0),
                   incarnation=int(info["incarnation"] or 0), concurrency=info.max_tasks,
                   last_beat=int(last_beat if last_beat is not None else info["last_beat"] or 0),
                   declared_at=int(info["declared_offline"] or 0), by=by, reason=reason)


# Declare an incarnation dead only if it is still the registered one and still silent, so a beat
# that lands while we were pinging wins. Returns the server time of the declaration, or 0.
_DECLARE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if redis.call('HGET', KEYS[2], 'instance') ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now - tonumber(score) < tonumber(ARGV[3]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'offline', 'declared_offline', now)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
local record = cjson.decode(ARGV[5])
record['declared_at'] = now
redis.call('HSET', KEYS[4], ARGV[2], cjson.encode(record))
return now
"""


def _eta_in_future(message: Unacked) -> bool:
    if not message.eta:
        return False
    try:
        eta = datetime.fromisoformat(message.eta)
    except ValueError:
        return False
    if eta.tzinfo is None:
        eta = eta.replace(tzinfo=timezone.utc)
    return eta > datetime.now(timezone.utc)


def presumed_running(messages: Iterable[Unacked], concurrency: int) -> set[str]:
    """Tags of the messages that were most likely executing: due ones, oldest first, one per slot."""
    due = sorted((m for m in messages if not _eta_in_future(m)), key=lambda m: m.delivered_at or 0)
    return {m.tag for m in due[:max(concurrency, 1)]}


class Failover:
    """Detection and recovery for one cluster (one namespace); see the module docstring."""

    #: how long a monitor's claim on one recovery lasts (it is deleted when the recovery is done)
    CLAIM_MS = 60_000

    def __init__(self, app, cfg: Config, *, actor: str = "", client: redis.Redis | None = None,
                 ping: Callable[[list[str], float], set[str]] | None = None):
        self.app = app
        self.cfg = cfg
        self.client = client or get_redis(cfg.redis_url)
        self.ns = cfg.namespace
        self.stale_ms = cfg.get("distributed.heartbeat.staleThresholdMs")
        self.registry = RedisRegistry(self.client, self.ns, self.stale_ms)
        self.leases = RedisLeaseBackend(self.client, self.ns)
        self.tags = RedisTagTracker(self.client, self.ns)
        self.records = FailoverRecords(self.client, self.ns)
        self.actor = actor or f"monitor@{socket.gethostname()}:{os.getpid()}"
        self._ping = ping or self._celery_ping
        self._declare = self.client.register_script(_DECLARE)
        self._pinged_ok: dict[str, float] = {}
        #: one pass at a time in this process (the monitor's and the connection watch's), so a pending
        #: recovery is never carried out twice side by side
        self.lock = threading.RLock()
        self._waiting_logged: dict[str, float] = {}
        self.grace = ReconnectGrace(self.client, self.stale_ms)

    # -- settings --------------------------------------------------------------------------------
    @property
    def recovery_enabled(self) -> bool:
        return bool(self.cfg.get("distributed.heartbeat.recoveryEnabled"))

    @property
    def max_recoveries(self) -> int:
        return int(self.cfg.get("distributed.failover.maxRecoveries"))

    @property
    def ping_timeout(self) -> float:
        return self.cfg.get("distributed.heartbeat.pingTimeoutMs") / 1000.0

    @property
    def task_ttl_s(self) -> int:
        return int(self.cfg.get("distributed.failover.visibilityTimeoutSeconds"))

    @property
    def retention_s(self) -> int:
        return int(self.cfg.get("distributed.failover.offlineRetentionSeconds"))

    @property
    def pending_key(self) -> str:
        return self.records.pending_key

    # -- detection -------------------------------------------------------------------------------
    def check(self) -> list[dict]:
        """One pass: finish pending recoveries, then find silent workers, ping, declare, recover."""
        with self.lock:
            return self._check()

    def claim(self, dead: DeadWorker) -> bool:
        """Take the recovery of ``dead`` for this monitor; False while another one carries it out (the
        claim expires after ``CLAIM_MS``, so a monitor that died half-way leaves it to the next pass)."""
        return bool(self.client.set(self._claim_key(dead), self.actor, nx=True, px=self.CLAIM_MS))

    def recover_claimed(self, dead: DeadWorker) -> dict | None:
        """Recover ``dead`` unless another monitor is recovering it right now; None then."""
        if not self.claim(dead):
            return None
        try:
            return self.recover(dead)
        finally:
            self.client.delete(self._claim_key(dead))

    def _claim_key(self, dead: DeadWorker) -> str:
        return f"{self.ns}failover:recovering:{dead.instance}"

    def _check(self) -> list[dict]:
        events = [e for e in (self.recover_claimed(dead) for dead in self.pending()) if e is not None]
        stale = self.registry.stale_ids()
        if not stale:
            return events
        now = server_time_ms(self.client)
        if self.grace.covers(now):
            return events  # Redis was away: nobody's silence is long enough yet
        suspects: list[tuple[WorkerInfo, int]] = []
        for worker_id, last_beat in stale:
            info = self.registry.get(worker_id)
            if info is None:  # a live entry without details: nothing to recover, tidy the index
                self.client.zrem(self.registry.live_key, worker_id)
                continue
            if info["state"] == ONLINE:
                self.registry.set_state(worker_id, STALE)
            suspects.append((info, last_beat))
        try:
            answering = self._ping([info["nodename"] for info, _ in suspects if info["nodename"]],
                                   self.ping_timeout)
        except Exception as exc:  # cannot ask: declaring anyone dead now could be a false failover
            logger.warning("sentinel: failover: cannot ping stale workers (%s); will retry", exc)
            return events
        for info, last_beat in suspects:
            silent_s = (server_time_ms(self.client) - last_beat) / 1000.0
            if info["nodename"] in answering:
                self._note_alive(info.id, silent_s)
                continue
            if self.grace.consumers_may_be_reconnecting(now):
                self._note_waiting(info.id, silent_s)
                continue
            dead = self.declare_dead(info, last_beat,
                                     reason=f"no heartbeat for {silent_s:.1f}s and no answer to ping")
            if dead is not None and (event := self.recover_claimed(dead)) is not None:
                events.append(event)
        return events

    def _celery_ping(self, nodenames: list[str], timeout: float) -> set[str]:
        if not nodenames:
            return set()
        replies = self.app.control.ping(destination=nodenames, timeout=timeout) or []
        return {node for reply in replies for node in reply}

    def _note_alive(self, worker_id: str, silent_s: float) -> None:
        now = time.monotonic()
        if now - self._pinged_ok.get(worker_id, 0.0) > 30:
            logger.warning("sentinel: worker %s has not beaten for %.1fs but answers ping; not failing over",
                           worker_id, silent_s)
            self._pinged_ok[worker_id] = now

    def _note_waiting(self, worker_id: str, silent_s: float) -> None:
        now = time.monotonic()
        if now - self._waiting_logged.get(worker_id, 0.0) > 30:
            logger.warning("sentinel: worker %s has not beaten for %.1fs and does not answer ping, but Redis came back "
                           "only recently and its consumer may still be reconnecting; asking again", worker_id,
                           silent_s)
            self._waiting_logged[worker_id] = now

    def declare_dead(self, info: WorkerInfo, last_beat: int, *, reason: str,
                     silent_ms: int | None = None) -> DeadWorker | None:
        """Move the incarnation to offline and leave a pending recovery; None if someone else did,
        it beat again meanwhile, or it re-registered."""
        dead = DeadWorker.from_info(info, by=self.actor, reason=reason, last_beat=last_beat)
        threshold = self.stale_ms if silent_ms is None else silent_ms
        now = self._declare(keys=[self.registry.live_key, self.registry.worker_key(info.id),
                                  self.registry.offline_key, self.pending_key],
                            args=[info.id, dead.instance, threshold, self.retention_s, json.dumps(asdict(dead))])
        if not now:
            return None
        dead.declared_at = int(now)
        logger.warning("sentinel: worker %s (incarnation %s) declared dead: %s", dead.worker_id,
                       dead.incarnation, reason)
        return dead

    def pending(self) -> list[DeadWorker]:
        out = []
        for raw in self.client.hvals(self.pending_key):
            try:
                out.append(DeadWorker(**json.loads(raw)))
            except (TypeError, ValueError):
                logger.error("sentinel: failover: unreadable pending record %r", raw)
        return out

    # -- recovery --------------------------------------------------------------------------------
    def recover(self, dead: DeadWorker, *, force: bool = False) -> dict:
        """Fence, give back, record; see the module docstring. Returns the event."""
        enabled = self.recovery_enabled or force
        returned: list[dict] = []
        dead_lettered: list[dict] = []
        finished: list[dict] = []
        released: list[str] = []
        moved_home: list[str] = []
        back = self._reincarnated(dead)
        if enabled:
            # A worker that already re-registered owns its worker-id-keyed leases and direct queue
            # again; only the messages of the dead incarnation are given back.
            if not back:
                released = self.leases.fence_worker(dead.worker_id)
                self._release_connections(dead)
            returned, dead_lettered, finished = self.give_back(dead)
            if not back:
                moved_home = self._drain_direct_queue(dead)
        event = {
            "id": f"{dead.worker_id}#{dead.incarnation}",
            "worker": dead.worker_id, "incarnation": dead.incarnation, "instance": dead.instance,
            "nodename": dead.nodename, "hostname": dead.hostname, "pid": dead.pid,
            "last_beat": dead.last_beat, "detected_at": dead.declared_at,
            "silent_ms": max(dead.declared_at - dead.last_beat, 0) if dead.last_beat else None,
            "recovered_at": server_time_ms(self.client), "reason": dead.reason, "by": dead.by or self.actor,
            "recovery": enabled, "tasks_recovered": returned, "dead_lettered": dead_lettered,
            "moved_home": moved_home, "leases_released": released, "already_finished": finished,
        }
        self.record(event)
        if enabled:
            self.tags.drop(dead.instance)
        self.client.hdel(self.pending_key, dead.instance)
        self._publish(event)
        logger.warning("sentinel: failover of %s: %d task(s) given back, %d dead-lettered, %d lease(s) fenced, "
                       "%d moved home from its direct queue, %d already finished (only their ack was lost)",
                       dead.worker_id, len(returned), len(dead_lettered), len(released), len(moved_home),
                       len(finished))
        return event

    def _release_connections(self, dead: DeadWorker) -> None:
        """A hung worker keeps its broker connection: have the broker drop it (RabbitMQ then gives
        back at once what it still holds, and the zombie stops consuming). A no-op on Redis."""
        try:
            with broker_for(self.app, cfg=self.cfg) as broker:
                closed = broker.release({"worker_id": dead.worker_id, "hostname": dead.hostname, "pid": dead.pid})
        except Exception as exc:  # RabbitMQ's own heartbeat timeout still applies
            logger.warning("sentinel: could not close the broker connections of %s: %s", dead.worker_id, exc)
            return
        if closed is None:
            return
        logger.warning("sentinel: closed %d broker connection(s) of %s", closed, dead.worker_id)

    def _reincarnated(self, dead: DeadWorker) -> bool:
        current = self.client.hmget(self.registry.worker_key(dead.worker_id), "instance", "state")
        return bool(current[0]) and current[0] != dead.instance and current[1] != OFFLINE

    def give_back(self, dead: DeadWorker) -> tuple[list[dict], list[dict], list[dict]]:
        """Every message the dead incarnation had taken: back to its queue, or to the dead letters; one whose
        outcome it stored before it died (only the ack was lost) is dropped. Returns (given back, dead-lettered,
        already finished)."""
        tags = self.tags.held_by(dead.instance)
        if not tags:
            return [], [], []
        # A tag kombu itself requeued (a pool child died) may have been taken by another worker since.
        others = [w["instance"] for w in self.registry.workers(include_offline=False)
                  if w["instance"] and w["instance"] != dead.instance]
        tags -= self.tags.held_elsewhere(tags, others)
        returned: list[dict] = []
        dead_lettered: list[dict] = []
        finished: list[dict] = []
        with broker_for(self.app, cfg=self.cfg) as unacked:
            held = unacked.get_many(tags)
            running = presumed_running(held.values(), dead.concurrency)
            # Newest first, each to the head of its queue: the oldest ends up first in line.
            for message in sorted(held.values(), key=lambda m: m.delivered_at or 0, reverse=True):
                if self._finished_after_delivery(message):
                    if unacked.remove(message.tag) is not None:
                        finished.append({"id": message.task_id, "name": message.task_name})
                    continue
                was_running = message.tag in running
                counts = self.records.task_counts(message.task_id)
                if was_running and counts["killed"] + 1 >= self.max_recoveries:
                    letter = self._dead_letter(unacked, message, dead, counts["killed"] + 1)
                    if letter:
                        dead_lettered.append(letter)
                    continue
                done = unacked.restore(message.tag, headers={"sentinel_recovered": counts["recovered"] + 1})
                if done is None:
                    continue  # acked meanwhile, or another monitor gave it back first
                self.records.count_recovery(message.task_id, killed=was_running, ttl_s=self.task_ttl_s)
                returned.append({"id": message.task_id, "name": message.task_name, "queues": done[1],
                                 "was_running": was_running})
        return returned, dead_lettered, finished

    def _finished_after_delivery(self, message: Unacked) -> bool:
        """The task's outcome was stored after this message was delivered: it ran to the end, and the worker died
        before its ack reached the broker. Running it again would run it twice."""
        if not message.task_id or not message.delivered_at:
            return False
        try:
            meta = self.app.backend.get_task_meta(message.task_id)
        except Exception:  # cannot tell: give it back, as before
            return False
        done = meta.get("date_done") if meta.get("status") in states.READY_STATES else None
        if not done:
            return False
        try:
            done_at = done if isinstance(done, datetime) else datetime.fromisoformat(str(done))
        except ValueError:
            return False
        if done_at.tzinfo is None:
            done_at = done_at.replace(tzinfo=timezone.utc)
        return done_at.timestamp() >= message.delivered_at

    def _dead_letter(self, unacked: Broker, message: Unacked, dead: DeadWorker, killed: int) -> dict | None:
        if unacked.remove(message.tag) is None:
            return None
        reason = (f"task {message.task_name}[{message.task_id}] was running on a worker that died {killed} "
                  f"time(s), the last one {dead.worker_id}; it was moved to the dead-letter list instead "
                  f"of being run again (distributed.failover.maxRecoveries = {self.max_recoveries})")
        letter = {"tag": message.tag, "id": message.task_id, "name": message.task_name, "worker": dead.worker_id,
                  "killed": killed, "at": server_time_ms(self.client), "reason": reason,
                  "message": message.message, "exchange": message.exchange, "routing_key": message.routing_key}
        self.records.add_dead_letter(letter, ttl_s=self.task_ttl_s)
        if message.task_id:
            try:
                self.app.backend.mark_as_failure(message.task_id, WorkerLostRepeatedly(reason))
            except Exception:
                logger.exception("sentinel: could not mark task %s as failed", message.task_id)
        logger.error("sentinel: %s", reason)
        return {k: letter[k] for k in ("id", "name", "killed")}

    def _drain_direct_queue(self, dead: DeadWorker) -> list[str]:
        moved = broker_for(self.app, cfg=self.cfg).move_all(direct_queue_name(dead.worker_id),
                                               lambda message: home_queue(self.app, self.cfg, message))
        return [waiting.task_id for waiting, _ in moved]

    # -- events ----------------------------------------------------------------------------------
    def record(self, event: dict) -> None:
        self.records.record(event)

    def _publish(self, event: dict) -> None:
        outbox.append("failover", event["id"], event, final=True, client=self.client, cfg=self.cfg)
        outbox.append("worker", event["worker"], {"status": OFFLINE, "incarnation": event["incarnation"],
                                                  "declared_dead_at": event["detected_at"],
                                                  "failover": event["id"]}, client=self.client, cfg=self.cfg)

    # -- operator actions ------------------------------------------------------------------------
    def cleanup(self, worker_id: str, *, force: bool = False) -> dict:
        """An operator says ``worker_id`` is gone: declare it dead now (no ping) and recover it."""
        info = self.registry.get(worker_id)
        if info is None:
            raise LookupError(f"no worker '{worker_id}' in the registry (it deregistered, or its offline "
                              f"record expired)")
        if info.status != OFFLINE and info.age_ms < self.stale_ms and not force:
            raise WorkerStillAlive(f"worker '{worker_id}' beat {info.age_ms / 1000:.1f}s ago; stop it first, "
                                   f"or pass --force if you are sure it is gone")
        if info.status == OFFLINE:
            dead = DeadWorker.from_info(info, by=f"operator via {self.actor}", reason="operator cleanup")
        else:
            dead = self.declare_dead(info, int(info["last_beat"] or 0), reason="operator cleanup", silent_ms=0)
            if dead is None:
                raise WorkerStillAlive(f"worker '{worker_id}' changed while cleaning up; try again")
            dead.by = f"operator via {self.actor}"
        return self.recover(dead, force=True)

