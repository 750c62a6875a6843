"""One read of the whole cluster's state, as a plain JSON-able dict: what metrics, health and alerts judge.

:func:`collect_snapshot` reads, in a handful of pipelined round trips: the registry (workers, their
load and last beat), the broker's queue lists (length and the age of the message a consumer would
take next), schedule-to-start latency and task outcomes (:mod:`.taskstats`), lease counters
(:mod:`.leases`), failover counts (if :mod:`.failover` is installed) and the GitHub mirror's status
(:func:`mirror_status`, None until a mirror publishes one). Because the result is plain data,
:func:`sentinel_celery.alerts.evaluate_alerts` and :func:`sentinel_celery.metrics.cluster_health`
are pure functions of it, tested with synthetic snapshots.

Shape::

    {"time": 1700000000.0,                      # Redis server time, seconds
     "workers": [{"id", "status", "active", "reserved", "capacity", "utilization", "processed",
                  "failed", "last_beat", "age_ms", "queues", "region", "hostname", "incarnation"}],
     "queues": {"build": {"length": 3, "oldest_age_seconds": 12.5 | None}},
     "latency": {"build": {"buckets": [[bound, cumulative]...], "count", "sum"}},
     "outcomes": {"totals": {"SUCCESS": n, ...}, "per_minute": {...}, "window_minutes": 5},
     "leases": {"held", "names", "acquisitions", "conflicts", "waits", "releases", "lost", "fenced"},
     "failover": {"failovers", "recovered_tasks", "last": {...} | None} | None,
     "github": {"requests": {"200": n}, "rate_limit_remaining", "outbox_depth", "lag_seconds", ...} | None}

Redis keys: none of its own; it reads those of the modules above.
"""
from __future__ import annotations

import json
import logging
import time
from importlib import import_module
from types import SimpleNamespace
from typing import Any

import redis

from .broker import BrokerQueues
from .config import Config
from .connection import get_redis, server_time_ms
from .registry import RedisRegistry
from .taskstats import SENT_HEADER, read_latency, read_outcomes

logger = logging.getLogger(__name__)

LEASE_COUNTERS = ("acquisitions", "conflicts", "waits", "releases", "lost", "fenced")


def _broker_view(cfg: Config, app, client: redis.Redis) -> BrokerQueues:
    if app is None:  # the same key layout install() gives the app, without building one
        opts = {"global_keyprefix": cfg.get("redis.brokerKeyPrefix")} if cfg.get("redis.brokerKeyPrefix") else {}
        app = SimpleNamespace(conf=SimpleNamespace(broker_transport_options=opts, broker_url=cfg.redis_url))
    return BrokerQueues(app, client=client)


def queue_names(cfg: Config, workers: list[dict], app=None) -> list[str]:
    names = set(cfg.task_types)
    names.add((app.conf.task_default_queue if app is not None else None) or "celery")
    for w in workers:
        if w["status"] != "offline":
            names.update(w.get("queues") or [])
    return sorted(names)


def read_queues(broker: BrokerQueues, queues: list[str], now: float) -> dict[str, dict]:
    """Length and age of the next-to-be-consumed message of every queue, in one round trip."""
    pipe = broker.client.pipeline(transaction=False)
    for q in queues:
        for _, key in broker.lists(q):
            pipe.llen(key)
            pipe.lindex(key, -1)
    res = pipe.execute()
    out, i = {}, 0
    for q in queues:
        length, oldest_age = 0, None
        for _ in broker.lists(q):
            n, raw = res[i], res[i + 1]
            i += 2
            length += n
            if raw is not None and oldest_age is None:
                oldest_age = message_age(raw, now)
        out[q] = {"length": length, "oldest_age_seconds": oldest_age}
    return out


def message_age(raw: str, now: float) -> float | None:
    """Seconds since the message was published (its ``sentinel_sent`` stamp); None if unstamped."""
    try:
        headers = json.loads(raw).get("headers") or {}
        sent = headers.get(SENT_HEADER)
        return round(max(now - float(sent), 0.0), 3) if sent else None
    except (ValueError, TypeError, AttributeError):
        return None


def read_workers(registry: RedisRegistry) -> list[dict]:
    rows = []
    for w in registry.workers(include_offline=True):
        rows.append({
            "id": w.id, "status": w.status, "active": w.active, "reserved": int(w["reserved"] or 0),
            "capacity": w.max_tasks, "utilization": round(w.utilization, 4),
            "processed": int(w["processed"] or 0), "failed": int(w["failed"] or 0),
            "last_beat": int(w["last_beat"] or 0), "age_ms": w.age_ms, "queues": w["queues"] or [],
            "region": (w["metadata"] or {}).get("region"), "hostname": w["hostname"],
            "incarnation": w["incarnation"], "nodename": w["nodename"], "pid": w["pid"],
        })
    return rows


def read_leases(client: redis.Redis, ns: str) -> dict:
    from .leases import RedisLeaseBackend
    out = {"held": 0, "names": 0, **{c: 0 for c in LEASE_COUNTERS}}
    for row in RedisLeaseBackend(client, ns).stats():
        out["names"] += 1
        out["held"] += 1 if row["holder"] else 0
        for c in LEASE_COUNTERS:
            out[c] += row[c]
    return out


def _optional(module: str):
    try:
        return import_module(module)
    except ModuleNotFoundError as exc:
        if not exc.name or not (module + ".").startswith(exc.name + "."):
            raise  # the module exists but something it imports is missing
        return None


def failover_summary(cfg: Config, client: redis.Redis) -> dict | None:
    """Failovers and recovered tasks, if the failover module is installed and says so."""
    failover = _optional("sentinel_celery.failover")
    summary = getattr(failover, "failover_summary", None) if failover else None
    if summary is None:
        return None
    try:
        return summary(cfg, client)
    except redis.RedisError:
        raise
    except Exception:
        logger.exception("sentinel: failover summary failed")
        return None


def failover_history(cfg: Config, client: redis.Redis, limit: int = 20) -> list[dict] | None:
    """Recent failover events, newest first; None if the failover module is not installed."""
    failover = _optional("sentinel_celery.failover")
    history = getattr(failover, "failover_history", None) if failover else None
    if history is None:
        return None
    return [dict(e) for e in history(cfg, client, limit)]


def mirror_status(cfg: Config, client: redis.Redis) -> dict | None:
    """The GitHub mirror's status (:func:`sentinel_celery.github.mirror_status`), None without a mirror."""
    github = _optional("sentinel_celery.github")
    return github.mirror_status(cfg, client) if github else None


def read_firing_alerts(client: redis.Redis, ns: str) -> list[dict]:
    return sorted((json.loads(v) for v in client.hgetall(f"{ns}alerts:firing").values()),
                  key=lambda a: a["name"])


def collect_snapshot(cfg: Config, app=None, client: redis.Redis | None = None) -> dict[str, Any]:
    client = client or get_redis(cfg.redis_url)
    ns = cfg.namespace
    registry = RedisRegistry(client, ns, cfg.get("distributed.heartbeat.staleThresholdMs"))
    now_ms = server_time_ms(client)
    workers = read_workers(registry)
    broker = _broker_view(cfg, app, client)
    return {
        "time": now_ms / 1000.0,
        "workers": workers,
        "queues": read_queues(broker, queue_names(cfg, workers, app), time.time()),
        "latency": {q: {**v, "buckets": [list(b) for b in v["buckets"]]} for q, v in read_latency(client, ns).items()},
        "outcomes": read_outcomes(client, ns),
        "leases": read_leases(client, ns),
        "failover": failover_summary(cfg, client),
        "github": mirror_status(cfg, client),
        "alerts": read_firing_alerts(client, ns),
    }


def live_workers(snapshot: dict) -> list[dict]:
    """Workers still in the cluster (not declared offline)."""
    return [w for w in snapshot["workers"] if w["status"] != "offline"]


def healthy(worker: dict) -> bool:
    """Beating in time: online, or draining/stopping (finishing their work)."""
    return worker["status"] not in ("offline", "stale")
