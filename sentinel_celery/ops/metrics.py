"""Metrics: the Prometheus exposition, the cluster-metrics JSON, cluster health, and the HTTP server.

Everything is computed from one :func:`~sentinel_celery.cluster.snapshot.collect_snapshot` per request
(cached for ``SNAPSHOT_TTL`` seconds, so several scrapers cost one read of Redis), which keeps a
metrics process stateless: any number of them, on any host, report the same figures.

HTTP (loopback by default, ``monitoring.metricsHost``:``monitoring.metricsPort``):
  GET /metrics         Prometheus text format
  GET /health          this process and its Redis: 200 {"status": "ok"} or 503
  GET /cluster/health  :func:`cluster_health` as JSON: 200 when healthy or degraded, 503 when critical
  GET /cluster/metrics :func:`cluster_metrics` as JSON

:func:`serve_metrics` starts the server in a daemon thread (``sentinel monitor`` calls it);
``sentinel metrics serve`` runs it in the foreground.

Redis keys: none of its own (it reads what :mod:`.snapshot` reads).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import mean
from typing import Any, Callable

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sentinel_celery.cluster.alerts import CRITICAL, SEVERITY_ORDER, Thresholds, evaluate_alerts
from sentinel_celery.cluster.snapshot import LEASE_COUNTERS, collect_snapshot, healthy, live_workers
from sentinel_celery.config import Config, get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.taskstats import quantile

logger = logging.getLogger(__name__)

SNAPSHOT_TTL = 1.0
WORKER_STATES = ("online", "stale", "draining", "stopping", "offline")
HEALTHY, DEGRADED = "healthy", "degraded"


def _iso(seconds: float | None) -> str | None:
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def cluster_metrics(snapshot: dict) -> dict[str, Any]:
    """The seed's ``cluster metrics`` document."""
    live = live_workers(snapshot)
    up = [w for w in live if healthy(w)]
    total_cap = sum(w["capacity"] for w in up)
    used = sum(min(w["active"], w["capacity"]) for w in up)
    queues = snapshot["queues"]
    outcomes = snapshot["outcomes"]
    s2s = {}
    for q, h in snapshot["latency"].items():
        buckets = [tuple(b) for b in h["buckets"]]
        s2s[q] = {"count": h["count"], "avgMs": round(h["sum"] / h["count"] * 1000, 1) if h["count"] else None,
                  "p50Ms": _ms(quantile(buckets, 0.5)), "p95Ms": _ms(quantile(buckets, 0.95))}
    leases = snapshot["leases"]
    attempts = leases["acquisitions"] + leases["conflicts"]
    return {
        "timestamp": _iso(snapshot["time"]),
        "totalWorkers": len(live),
        "healthyWorkers": len(up),
        "offlineWorkers": len(snapshot["workers"]) - len(live),
        "totalCapacity": total_cap,
        "utilizedCapacity": used,
        "avgUtilization": round(mean(w["utilization"] for w in up), 4) if up else 0.0,
        "taskMetrics": {
            "queues": {q: {"length": v["length"], "oldestAgeSeconds": v["oldest_age_seconds"]}
                       for q, v in queues.items()},
            "queued": sum(v["length"] for v in queues.values()),
            "active": sum(w["active"] for w in live),
            "reserved": sum(w["reserved"] for w in live),
            "totals": outcomes["totals"],
            "rates": {"windowMinutes": outcomes["window_minutes"],
                      "perMinute": outcomes["per_minute"]},
            "scheduleToStart": s2s,
        },
        "lockMetrics": {**{k: leases[k] for k in ("held", "names", *LEASE_COUNTERS)},
                        "conflictRate": round(leases["conflicts"] / attempts, 4) if attempts else 0.0},
        "workerMetrics": [{"id": w["id"], "status": w["status"], "utilization": w["utilization"],
                           "active": w["active"], "capacity": w["capacity"], "queues": w["queues"],
                           "region": w["region"], "lastHeartbeat": _iso(w["last_beat"] / 1000.0)}
                          for w in snapshot["workers"]],
        "failover": snapshot.get("failover"),
        "github": snapshot.get("github"),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def cluster_health(snapshot: dict, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """healthy / degraded (any warning) / critical (any critical alert), with the reasons."""
    alerts = evaluate_alerts(snapshot, thresholds)
    worst = max((SEVERITY_ORDER[a.severity] for a in alerts), default=0)
    status = CRITICAL if worst == SEVERITY_ORDER[CRITICAL] else DEGRADED if worst else HEALTHY
    live = live_workers(snapshot)
    return {"status": status, "timestamp": _iso(snapshot["time"]),
            "reasons": [{"alert": a.name, "severity": a.severity, "summary": a.summary} for a in alerts],
            "workers": {"live": len(live), "healthy": sum(1 for w in live if healthy(w))}}


# -- Prometheus --------------------------------------------------------------------------------------
def prometheus_families(snapshot: dict) -> list:
    fams = []

    def gauge(name, doc, labels=(), rows=()):
        g = GaugeMetricFamily(name, doc, labels=list(labels))
        for label_values, value in rows:
            g.add_metric(list(label_values), value)
        fams.append(g)

    def counter(name, doc, labels=(), rows=()):
        c = CounterMetricFamily(name, doc, labels=list(labels))
        for label_values, value in rows:
            c.add_metric(list(label_values), value)
        fams.append(c)

    workers = snapshot["workers"]
    live = live_workers(snapshot)
    up = [w for w in live if healthy(w)]
    by_state = {s: 0 for s in WORKER_STATES}
    for w in workers:
        by_state[w["status"]] = by_state.get(w["status"], 0) + 1
    gauge("sentinel_workers", "Workers by state.", ["state"], [((s,), n) for s, n in by_state.items()])
    gauge("sentinel_worker_utilization", "Busy slots / slots, per live worker.", ["worker"],
          [((w["id"],), w["utilization"]) for w in live])
    gauge("sentinel_worker_active_tasks", "Tasks executing, per live worker.", ["worker"],
          [((w["id"],), w["active"]) for w in live])
    gauge("sentinel_worker_capacity_slots", "Concurrent task slots, per live worker.", ["worker"],
          [((w["id"],), w["capacity"]) for w in live])
    gauge("sentinel_worker_heartbeat_age_seconds", "Seconds since the worker's last heartbeat.", ["worker"],
          [((w["id"],), w["age_ms"] / 1000.0) for w in live])
    slots = sum(w["capacity"] for w in up)
    busy = sum(min(w["active"], w["capacity"]) for w in up)
    gauge("sentinel_capacity_slots", "Slots of healthy workers.", rows=[((), slots)])
    gauge("sentinel_capacity_used_slots", "Busy slots of healthy workers.", rows=[((), busy)])
    gauge("sentinel_cluster_utilization", "Busy slots / slots of healthy workers.",
          rows=[((), busy / slots if slots else 0.0)])

    queues = snapshot["queues"]
    gauge("sentinel_queue_length", "Messages waiting in the queue.", ["queue"],
          [((q,), v["length"]) for q, v in queues.items()])
    gauge("sentinel_queue_oldest_message_age_seconds",
          "Age of the message a consumer would take next (0 when empty or unstamped).", ["queue"],
          [((q,), v["oldest_age_seconds"] or 0.0) for q, v in queues.items()])

    h = HistogramMetricFamily("sentinel_schedule_to_start_seconds",
                              "Time from publish (or ETA) until a worker started the task.", labels=["queue"])
    for q, v in snapshot["latency"].items():
        buckets = [("+Inf" if b == float("inf") else repr(float(b)), n) for b, n in v["buckets"]]
        h.add_metric([q], buckets, v["sum"])
    fams.append(h)

    gauge("sentinel_tasks_in_flight", "Tasks queued (in the broker), reserved (prefetched) and active.",
          ["state"], [(("queued",), sum(v["length"] for v in queues.values())),
                      (("reserved",), sum(w["reserved"] for w in live)),
                      (("active",), sum(w["active"] for w in live))])
    counter("sentinel_tasks_completed", "Task executions by final state (SUCCESS, FAILURE, RETRY, ...).",
            ["state"], [((s,), n) for s, n in sorted(snapshot["outcomes"]["totals"].items())])

    leases = snapshot["leases"]
    gauge("sentinel_leases_held", "Leases held now.", rows=[((), leases["held"])])
    for stat in LEASE_COUNTERS:
        counter(f"sentinel_lease_{stat}", f"Lease {stat}, all leases.", rows=[((), leases[stat])])

    failover = snapshot.get("failover")
    if failover:
        counter("sentinel_failovers", "Workers declared dead and recovered.", rows=[((), failover.get("failovers", 0))])
        counter("sentinel_recovered_tasks", "Tasks restored from dead workers.",
                rows=[((), failover.get("recovered_tasks", 0))])

    github = snapshot.get("github")
    if github:
        counter("sentinel_github_requests", "GitHub API requests by HTTP status.", ["status"],
                [((str(s),), n) for s, n in sorted((github.get("requests") or {}).items())])
        for key, name, doc in (("rate_limit_remaining", "sentinel_github_rate_limit_remaining",
                                "Requests left in the current GitHub rate-limit window."),
                               ("outbox_depth", "sentinel_github_outbox_depth", "Events waiting in the mirror outbox."),
                               ("lag_seconds", "sentinel_github_mirror_lag_seconds",
                                "Age of the oldest event not yet mirrored.")):
            if github.get(key) is not None:
                gauge(name, doc, rows=[((), github[key])])

    gauge("sentinel_alerts_firing", "Alerts firing (1 per alert).", ["alert", "severity"],
          [((a["name"], a["severity"]), 1) for a in snapshot.get("alerts", [])])
    return fams


class SnapshotCollector:
    """A prometheus_client collector over a cached snapshot."""

    def __init__(self, source: "SnapshotSource"):
        self.source = source

    def collect(self):
        started = time.perf_counter()
        try:
            snapshot = self.source.get()
        except redis.RedisError as exc:
            logger.warning("sentinel metrics: cannot read Redis: %s", exc)
            yield GaugeMetricFamily("sentinel_up", "1 when Sentinel's Redis could be read.", value=0)
            return
        yield GaugeMetricFamily("sentinel_up", "1 when Sentinel's Redis could be read.", value=1)
        yield from prometheus_families(snapshot)
        yield GaugeMetricFamily("sentinel_scrape_duration_seconds", "Time to read the cluster snapshot.",
                                value=time.perf_counter() - started)


class SnapshotSource:
    """Collects snapshots, at most one per ``ttl`` seconds however many readers ask."""

    def __init__(self, cfg: Config, app=None, ttl: float = SNAPSHOT_TTL,
                 collect: Callable[..., dict] = collect_snapshot):
        self.cfg, self.app, self.ttl, self._collect = cfg, app, ttl, collect
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None

    def get(self) -> dict:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
            snapshot = self._collect(self.cfg, self.app)
            self._cached = (time.monotonic(), snapshot)
            return snapshot


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, cfg: Config, app=None):
        self.cfg = cfg
        self.source = SnapshotSource(cfg, app)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(self.source))
        self.thresholds = Thresholds.from_config(cfg)
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.port}"

    def start(self) -> "MetricsServer":
        self._thread = threading.Thread(target=self.serve_forever, name="sentinel-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def log_message(self, fmt, *args):  # quiet: scrapers call every few seconds
        logger.debug("metrics %s - " + fmt, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, indent=2, default=str).encode(), "application/json")

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/metrics":
                self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
            elif path == "/health":
                get_redis(self.server.cfg.redis_url).ping()
                self._json(200, {"status": "ok"})
            elif path == "/cluster/health":
                health = cluster_health(self.server.source.get(), self.server.thresholds)
                self._json(503 if health["status"] == CRITICAL else 200, health)
            elif path == "/cluster/metrics":
                self._json(200, cluster_metrics(self.server.source.get()))
            else:
                self._json(404, {"error": "not found",
                                 "paths": ["/metrics", "/health", "/cluster/health", "/cluster/metrics"]})
        except redis.RedisError as exc:
            self._json(503, {"status": "error", "error": f"cannot read Redis: {exc}"})


def serve_metrics(cfg: Config | None = None, app=None, *, host: str | None = None,
                  port: int | None = None) -> MetricsServer:
    """Start the metrics HTTP server in a daemon thread; ``.stop()`` it when done. Port 0 picks one."""
    cfg = cfg or get_config()
    host = host if host is not None else cfg.get("monitoring.metricsHost")
    port = port if port is not None else cfg.get("monitoring.metricsPort")
    return MetricsServer((host, port), cfg, app).start()
