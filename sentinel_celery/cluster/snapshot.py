"""One read of the whole cluster's state, as a plain JSON-able dict: what metrics, health and alerts judge.

:func:`collect_snapshot` reads, in a handful of pipelined round trips: the registry (workers, their
load and last beat), the broker's queue lists (length and the age of the message a consumer would
take next), schedule-to-start latency and task outcomes (:mod:`.taskstats`), lease counters
(:mod:`.leases`), failover counts (if :mod:`.failover` is installed) and the GitHub mirror's status
(:func:`mirror_status`, None until a mirror publishes one). Because the result is plain data,
:func:`sentinel_celery.cluster.alerts.evaluate_alerts` and :func:`sentinel_celery.ops.metrics.cluster_health`
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
from dataclasses import asdict
from typing import Any

import redis

from sentinel_celery.broker.base import Broker
from sentinel_celery.broker.factory import broker_for, broker_for_config
from sentinel_celery.config import Config
from sentinel_celery.github.mirror import mirror_status
from sentinel_celery.state.connection import get_redis, server_time_ms
from sentinel_celery.state.failovers import failover_summary, read_events
from sentinel_celery.state.leases import RedisLeaseBackend
from sentinel_celery.state.marker import read_data_loss
from sentinel_celery.state.registry import RedisRegistry
from sentinel_celery.state.taskstats import read_latency, read_outcomes

logger = logging.getLogger(__name__)

LEASE_COUNTERS = ("acquisitions", "conflicts", "waits", "releases", "lost", "fenced")
#: the leases the cluster's own duties are elected with (failover monitor, leader, autoscaler, GitHub
#: mirror) are named under this prefix; every other lease is a job's (``lock_key``, ``lease()``)
CLUSTER_LEASE_PREFIX = "sentinel:"


def split_leases(held: list[dict]) -> tuple[list[dict], list[dict]]:
    """``held`` leases as (jobs' leases, the cluster's own leader leases)."""
    jobs = [h for h in held if not h["name"].startswith(CLUSTER_LEASE_PREFIX)]
    return jobs, [h for h in held if h["name"].startswith(CLUSTER_LEASE_PREFIX)]


def _broker_view(cfg: Config, app, client: redis.Redis) -> Broker:
    return broker_for(app, client=client) if app is not None else broker_for_config(cfg, client=client)


def queue_names(cfg: Config, workers: list[dict], app=None) -> list[str]:
    names = set(cfg.task_types)
    names.add((app.conf.task_default_queue if app is not None else None) or "celery")
    for w in workers:
        if w["status"] != "offline":
            names.update(w.get("queues") or [])
    return sorted(names)


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
    out = {"held": 0, "names": 0, **{c: 0 for c in LEASE_COUNTERS}}
    for row in RedisLeaseBackend(client, ns).stats():
        out["names"] += 1
        out["held"] += 1 if row["holder"] else 0
        for c in LEASE_COUNTERS:
            out[c] += row[c]
    return out


def failover_history(cfg: Config, client: redis.Redis, limit: int = 20) -> list[dict]:
    """Recent failover events, newest first."""
    return read_events(client, cfg.namespace, limit)


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
        "queues": broker.queue_stats(queue_names(cfg, workers, app), time.time()),
        "latency": {q: {**v, "buckets": [list(b) for b in v["buckets"]]} for q, v in read_latency(client, ns).items()},
        "outcomes": read_outcomes(client, ns),
        "leases": read_leases(client, ns),
        "failover": failover_summary(cfg, client),
        "github": mirror_status(cfg, client),
        "alerts": read_firing_alerts(client, ns),
        "data_loss": _data_loss(client, ns),
    }


def _data_loss(client: redis.Redis, namespace: str) -> dict | None:
    loss = read_data_loss(client, namespace)
    return None if loss is None else {**asdict(loss), "summary": loss.summary}


def live_workers(snapshot: dict) -> list[dict]:
    """Workers still in the cluster (not declared offline)."""
    return [w for w in snapshot["workers"] if w["status"] != "offline"]


def healthy(worker: dict) -> bool:
    """Beating in time: online, or draining/stopping (finishing their work)."""
    return worker["status"] not in ("offline", "stale")
