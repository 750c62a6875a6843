"""Auto-scaling: how many workers the cluster should have, and the scalers that get it there.

The policy (``distributed.autoscale.*``), evaluated by the cluster leader every ``intervalMs``
(:func:`evaluate` is pure; :class:`Autoscaler` measures, decides, acts and records):
  up by ``step``   when utilization > ``scaleUpUtilization`` (0.80) and queued > ``scaleUpQueued`` (50)
  down by ``step`` when utilization < ``scaleDownUtilization`` (0.20) and queued < ``scaleDownQueued`` (10)
  never outside [``minWorkers``, ``maxWorkers``]; no change within ``cooldownSeconds`` of the last
  one, except to get back within those bounds.
Utilization is running tasks ÷ slots over the online workers (a slot-weighted average); queued is
what waits in the type, direct and coordinator queues.

Scalers (``distributed.autoscale.scaler``):
  local    starts worker processes on this host (processes.py, options under ``autoscale.local``)
  command  runs ``autoscale.command`` — an argv, never a shell; ``{desired}`` in it is replaced by the
           desired count, else the count is appended — with ``SENTINEL_DESIRED_WORKERS`` set
  none     changes nothing itself; the desired count is published for KEDA/HPA or a person
``local`` scales down by draining (drain.py) the least-loaded workers, the ones it started first:
they stop consuming, finish what they hold and warm-stop, so nothing is lost or re-run (drains run
in background threads). ``command`` and ``none`` leave the choice to the platform, whose stop
(SIGTERM) is Celery's warm shutdown: running tasks finish, prefetched ones go back to the queue.

Redis keys (under the namespace):
  autoscale:status    hash: desired, current, utilization, queued, action, reason, at, last_change,
                      scaler, fence (the leader's lease token; a write with an older token is dropped)
  autoscale:desired   string: the desired worker count
  autoscale:draining  set: worker ids the autoscaler is draining
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from sentinel_celery.broker.factory import broker_for
from sentinel_celery.cluster.drain import DrainError, drain
from sentinel_celery.cluster.processes import start_worker
from sentinel_celery.config import Config, get_config
from sentinel_celery.routing import coordinator_queue_name, direct_queue_name
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import LockContended, get_backend, release_quietly, try_acquire
from sentinel_celery.state.registry import ONLINE, get_registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    min_workers: int = 1
    max_workers: int = 10
    up_utilization: float = 0.80
    up_queued: int = 50
    down_utilization: float = 0.20
    down_queued: int = 10
    step: int = 2
    cooldown_seconds: float = 60

    @classmethod
    def from_config(cls, cfg: Config) -> "Policy":
        a = cfg.get("distributed.autoscale")
        return cls(a["minWorkers"], a["maxWorkers"], float(a["scaleUpUtilization"]), a["scaleUpQueued"],
                   float(a["scaleDownUtilization"]), a["scaleDownQueued"], a["step"], a["cooldownSeconds"])


@dataclass(frozen=True)
class Load:
    workers: int
    slots: int
    running: int
    queued: int

    @property
    def utilization(self) -> float:
        return self.running / self.slots if self.slots else 0.0


@dataclass(frozen=True)
class Decision:
    action: str        # "up", "down" or "hold"
    current: int
    desired: int
    reason: str

    @property
    def change(self) -> int:
        return self.desired - self.current


def evaluate(load: Load, policy: Policy, *, now: float, last_change: float | None = None) -> Decision:
    """The scaling decision for ``load`` (pure: no I/O, no clock)."""
    current = load.workers
    util, queued = load.utilization, load.queued
    if current < policy.min_workers:
        return Decision("up", current, policy.min_workers, f"{current} worker(s) < minWorkers {policy.min_workers}")
    if current > policy.max_workers:
        return Decision("down", current, policy.max_workers, f"{current} worker(s) > maxWorkers {policy.max_workers}")
    measured = f"utilization {util:.2f}, {queued} queued"
    if util > policy.up_utilization and queued > policy.up_queued:
        desired, bound = min(current + policy.step, policy.max_workers), "maxWorkers"
        action = "up"
    elif util < policy.down_utilization and queued < policy.down_queued:
        desired, bound = max(current - policy.step, policy.min_workers), "minWorkers"
        action = "down"
    else:
        return Decision("hold", current, current, f"{measured}: within thresholds")
    if desired == current:
        return Decision("hold", current, current, f"{measured}: already at {bound} ({current})")
    if last_change is not None and now - last_change < policy.cooldown_seconds:
        left = policy.cooldown_seconds - (now - last_change)
        return Decision("hold", current, current, f"{measured}: would scale {action} to {desired}, "
                                                  f"but in cooldown for {left:.0f}s more")
    return Decision(action, current, desired, f"{measured}: scale {action} by {abs(desired - current)}")


# -- scalers ------------------------------------------------------------------------------------------
class ScalerError(RuntimeError):
    pass


class Scaler:
    """Brings the number of workers to the desired count. ``start`` adds workers; ``stop`` removes
    the given ones (the autoscaler drains them first, so ``stop`` only has to let them go)."""

    name = "none"
    #: scale down by draining chosen workers (else the platform picks and stops them)
    drains = False

    def start(self, count: int, desired: int) -> list[str]:
        return []

    def scaled(self, desired: int) -> None:
        """Called after every change (up or down) with the new desired count."""

    def prefer_to_remove(self, worker_ids: list[str]) -> list[str]:
        return worker_ids

    def stop(self, worker_id: str) -> None:
        pass


class NoneScaler(Scaler):
    name = "none"


class CommandScaler(Scaler):
    name = "command"

    def __init__(self, argv: list[str], timeout: float = 120.0):
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ScalerError("distributed.autoscale.command must be a non-empty list of strings (an argv; "
                              "it never runs through a shell)")
        self.argv = list(argv)
        self.timeout = timeout

    def command_for(self, desired: int) -> list[str]:
        if any("{desired}" in a for a in self.argv):
            return [a.replace("{desired}", str(desired)) for a in self.argv]
        return [*self.argv, str(desired)]

    def scaled(self, desired: int) -> None:
        argv = self.command_for(desired)
        try:
            done = subprocess.run(argv, env={**os.environ, "SENTINEL_DESIRED_WORKERS": str(desired)},
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ScalerError(f"scale command {argv!r} failed: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout or b"").decode(errors="replace")[-500:]
            raise ScalerError(f"scale command {argv!r} exited {done.returncode}: {tail}")

    def start(self, count: int, desired: int) -> list[str]:
        return []  # the platform starts them when the command runs (scaled)


class LocalScaler(Scaler):
    """Worker processes on this host, started with processes.py."""

    name = "local"
    drains = True

    def __init__(self, cfg: Config, *, env: dict | None = None):
        self.cfg = cfg
        self.options = cfg.get("distributed.autoscale.local")
        self.env = dict(env or {})
        self.processes: dict = {}  # worker id -> WorkerProcess
        self._lock = threading.Lock()

    def _new_id(self) -> str:
        host = socket.gethostname().split(".")[0]
        return f"{self.options['idPrefix']}-{host}-{uuid.uuid4().hex[:6]}"

    def start(self, count: int, desired: int) -> list[str]:
        opts = self.options
        started = []
        for _ in range(count):
            worker_id = self._new_id()
            proc = start_worker(worker_id, env=self.env, log_dir=Path(opts["logDir"]) if opts["logDir"] else None,
                                app=opts["app"], queues=opts["queues"] or None, concurrency=opts["concurrency"],
                                include=opts["include"])
            with self._lock:
                self.processes[worker_id] = proc
            started.append(worker_id)
            logger.info("sentinel: autoscale started worker %s (pid %s)", worker_id, proc.pid)
        return started

    def prefer_to_remove(self, worker_ids: list[str]) -> list[str]:
        ours = [w for w in worker_ids if w in self.processes]
        return ours + [w for w in worker_ids if w not in self.processes]

    def stop(self, worker_id: str) -> None:
        with self._lock:
            proc = self.processes.pop(worker_id, None)
        if proc is not None:
            proc.stop(timeout=60, exit_grace=30)  # drained and told to shut down: this only reaps it

    def stop_all(self) -> None:
        with self._lock:
            procs, self.processes = list(self.processes.values()), {}
        for proc in procs:
            proc.stop()


def make_scaler(cfg: Config, **kwargs) -> Scaler:
    kind = cfg.get("distributed.autoscale.scaler")
    if kind == "local":
        return LocalScaler(cfg, **kwargs)
    if kind == "command":
        return CommandScaler(cfg.get("distributed.autoscale.command"))
    return NoneScaler()


# -- the autoscaler -----------------------------------------------------------------------------------
_WRITE_STATUS = """
local fence = tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[1], 'fence') or '-1')
if fence < last then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'fence', fence)
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


class Autoscaler:
    def __init__(self, app, cfg: Config | None = None, *, scaler: Scaler | None = None, policy: Policy | None = None,
                 clock=time.time):
        self.app = app
        self.cfg = cfg or get_config()
        self.scaler = scaler or make_scaler(self.cfg)
        self.policy = policy or Policy.from_config(self.cfg)
        self.clock = clock
        self.client = get_redis(self.cfg.redis_url)
        self._write = self.client.register_script(_WRITE_STATUS)
        self.drains: dict[str, threading.Thread] = {}

    def key(self, suffix: str) -> str:
        return f"{self.cfg.namespace}autoscale:{suffix}"

    def measure(self) -> tuple[Load, list]:
        online = [w for w in get_registry(self.cfg).workers(include_offline=False) if w.status == ONLINE]
        draining = self.client.smembers(self.key("draining"))
        online = [w for w in online if w.id not in draining]
        queues = [*self.cfg.task_types, *(coordinator_queue_name(t) for t in self.cfg.task_types),
                  *(direct_queue_name(w.id) for w in online)]
        queued = sum(broker_for(self.app).depths(queues).values())
        load = Load(len(online), sum(w.max_tasks for w in online), sum(min(w.active, w.max_tasks) for w in online),
                    queued)
        return load, online

    def status(self) -> dict:
        return self.client.hgetall(self.key("status"))

    def tick(self, fence: int = 0) -> Decision:
        load, online = self.measure()
        last = self.client.hget(self.key("status"), "last_change")
        decision = evaluate(load, self.policy, now=self.clock(), last_change=float(last) if last else None)
        error = ""
        if decision.action != "hold":
            try:
                self.apply(decision, online)
            except ScalerError as exc:
                error = str(exc)
                logger.error("sentinel: autoscale: %s", exc)
        fields = {"desired": decision.desired, "current": decision.current, "action": decision.action,
                  "reason": decision.reason, "utilization": round(load.utilization, 3), "queued": load.queued,
                  "slots": load.slots, "running": load.running, "at": self.clock(), "scaler": self.scaler.name,
                  "error": error}
        if decision.action != "hold" and not error:
            fields["last_change"] = self.clock()
        flat = [x for kv in fields.items() for x in (kv[0], str(kv[1]))]
        self._write(keys=[self.key("status"), self.key("desired")], args=[int(fence), decision.desired, *flat])
        if decision.action != "hold":
            logger.info("sentinel: autoscale %s: %d -> %d (%s)", decision.action, decision.current,
                        decision.desired, decision.reason)
        return decision

    def apply(self, decision: Decision, online: list) -> None:
        if decision.action == "up":
            self.scaler.start(decision.change, decision.desired)
            self.scaler.scaled(decision.desired)
            return
        if not self.scaler.drains:
            self.scaler.scaled(decision.desired)
            return
        by_load = [w.id for w in sorted(online, key=lambda w: (w.active + int(w["reserved"] or 0), w.id))]
        victims = self.scaler.prefer_to_remove(by_load)[:abs(decision.change)]
        for worker_id in victims:
            self.client.sadd(self.key("draining"), worker_id)
            t = threading.Thread(target=self._drain, args=(worker_id,), name=f"sentinel-drain-{worker_id}",
                                 daemon=True)
            self.drains[worker_id] = t
            t.start()
        self.scaler.scaled(decision.desired)

    def _drain(self, worker_id: str) -> None:
        try:
            drain(self.app, worker_id, cfg=self.cfg)
            self.scaler.stop(worker_id)
        except (DrainError, redis.RedisError) as exc:
            logger.error("sentinel: autoscale could not drain %s: %s", worker_id, exc)
        finally:
            self.client.srem(self.key("draining"), worker_id)

    def wait_for_drains(self, timeout: float | None = None) -> None:
        for t in list(self.drains.values()):
            t.join(timeout)


def status_report(app, cfg: Config | None = None) -> dict:
    """What ``sentinel autoscale status`` shows: policy, live load, last decision."""
    cfg = cfg or get_config()
    scaler = NoneScaler()
    scaler.name = cfg.get("distributed.autoscale.scaler")
    auto = Autoscaler(app, cfg, scaler=scaler)
    load, _ = auto.measure()
    last = auto.status()
    now = time.time()
    preview = evaluate(load, auto.policy, now=now,
                       last_change=float(last["last_change"]) if last.get("last_change") else None)
    return {"enabled": cfg.get("distributed.autoscale.enabled"), "scaler": scaler.name,
            "policy": asdict(auto.policy),
            "load": {**asdict(load), "utilization": round(load.utilization, 3)},
            "would_do_now": asdict(preview),
            "last_decision": last,
            "draining": sorted(auto.client.smembers(auto.key("draining")))}


class AutoscaleDuty:
    """One evaluation per call while holding the fenced lease ``sentinel:autoscaler``, so only one
    process in the cluster scales at a time — the cluster leader, or ``sentinel autoscale run``."""

    LEASE = "sentinel:autoscaler"

    def __init__(self, app, cfg: Config, *, owner: str, autoscaler: Autoscaler | None = None):
        self.cfg = cfg
        self.owner = owner
        self.autoscaler = autoscaler or Autoscaler(app, cfg)
        self.lease = None

    def step(self) -> Decision | None:
        if self.lease is None or self.lease.lost:
            backend = get_backend()
            if backend.client.exists(backend.key(self.LEASE)):
                return None  # another process scales
            ttl = max(3 * self.cfg.get("distributed.autoscale.intervalMs") / 1000.0, 10.0)
            try:
                self.lease = try_acquire(self.LEASE, ttl, worker=self.owner)
            except LockContended:
                self.lease = None
                return None
        elif time.monotonic() - self.lease.renewed_at > self.lease.ttl / 2 and not self.lease.renew():
            return None  # we were paused past the lease: another process may be scaling now
        return self.autoscaler.tick(fence=self.lease.token)

    def release(self) -> None:
        release_quietly(self.lease)
        self.lease = None
