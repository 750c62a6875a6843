"""The ``sentinel cluster`` command group: cluster-wide views (metrics, health, load distribution).

Subsystems add their commands to :data:`cluster` (``@cluster.command(...)``); ``cli.py`` registers the
group.
"""
from __future__ import annotations

import json
import sys

import click

from sentinel_celery.cli.common import celery_app, emit, handles_errors, json_option, table
from sentinel_celery.cluster.alerts import CRITICAL, Thresholds
from sentinel_celery.cluster.balancer import load_distribution
from sentinel_celery.cluster.snapshot import collect_snapshot
from sentinel_celery.config import get_config
from sentinel_celery.ops.metrics import cluster_health, cluster_metrics
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.marker import clear_data_loss

cluster = click.Group("cluster", help="Cluster-wide views: metrics, health, load distribution.")


def _snapshot():
    return collect_snapshot(get_config())


@cluster.command("metrics", help="Workers, capacity, utilization, queues, task rates, leases (--json for scripts).")
@json_option
@handles_errors
def cluster_metrics_command(as_json):
    data = cluster_metrics(_snapshot())

    def render(d):
        t = d["taskMetrics"]
        rates = ", ".join(f"{k.lower()} {v}/min" for k, v in sorted(t["rates"]["perMinute"].items())) or "-"
        lines = [
            f"time             {d['timestamp']}",
            f"workers          {d['healthyWorkers']} healthy of {d['totalWorkers']} live"
            + (f" ({d['offlineWorkers']} offline)" if d["offlineWorkers"] else ""),
            f"capacity         {d['utilizedCapacity']}/{d['totalCapacity']} slots busy, "
            f"average utilization {d['avgUtilization']:.0%}",
            f"tasks            {t['queued']} queued, {t['reserved']} reserved, {t['active']} active; "
            f"rates (last {t['rates']['windowMinutes']} min): {rates}",
            f"leases           {d['lockMetrics']['held']} held, {d['lockMetrics']['acquisitions']} acquisitions, "
            f"{d['lockMetrics']['conflicts']} conflicts ({d['lockMetrics']['conflictRate']:.1%})",
        ]
        if d.get("failover"):
            lines.append(f"failover         {json.dumps(d['failover'], default=str)}")
        if d.get("github"):
            g = d["github"]
            lines.append(f"github mirror    rate limit left {g.get('rate_limit_remaining')}, outbox "
                         f"{g.get('outbox_depth')}, lag {g.get('lag_seconds')}s")
        queues = [{"queue": q, "length": v["length"], "age": v["oldestAgeSeconds"],
                   "p50": (t["scheduleToStart"].get(q) or {}).get("p50Ms"),
                   "p95": (t["scheduleToStart"].get(q) or {}).get("p95Ms")} for q, v in sorted(t["queues"].items())]
        lines += ["", table(queues, [("queue", "QUEUE"), ("length", "WAITING"), ("age", "OLDEST (s)"),
                                     ("p50", "START p50 ms"), ("p95", "START p95 ms")])]
        if d["workerMetrics"]:
            rows = [{**w, "util": f"{w['utilization']:.0%}", "load": f"{w['active']}/{w['capacity']}"}
                    for w in d["workerMetrics"]]
            lines += ["", table(rows, [("id", "WORKER"), ("status", "STATUS"), ("load", "LOAD"), ("util", "UTIL"),
                                       ("region", "REGION"), ("lastHeartbeat", "LAST HEARTBEAT")])]
        return "\n".join(lines)
    emit(data, as_json, render)


@cluster.command("health", help="healthy / degraded / critical with reasons; exit code 1 when critical.")
@json_option
@handles_errors
def cluster_health_command(as_json):
    health = cluster_health(_snapshot(), Thresholds.from_config(get_config()))

    def render(h):
        head = f"cluster {h['status'].upper()} ({h['workers']['healthy']}/{h['workers']['live']} workers healthy)"
        return "\n".join([head, *(f"  {r['severity']:<8} {r['summary']}" for r in h["reasons"])])
    emit(health, as_json, render)
    if health["status"] == CRITICAL:
        sys.exit(1)


@cluster.command("clear-data-loss",
                 help="Acknowledge that Redis lost its data: clears the record that keeps health critical.")
@handles_errors
def cluster_clear_data_loss_command():
    cfg = get_config()
    loss = clear_data_loss(get_redis(cfg.redis_url), cfg.namespace)
    click.echo(f"cleared: {loss.summary}" if loss else "no data loss recorded")


@cluster.command("load-distribution",
                 help="How work is spread over workers: slots, running, waiting in direct queues, placements.")
@json_option
@handles_errors
def cluster_load_distribution_command(as_json):
    data = load_distribution(celery_app(), get_config())

    def render(d):
        u = d["utilization"]
        head = (f"strategy {d['strategy']}, pattern {d['pattern']}; utilization mean {u['mean']:.0%}, "
                f"min {u['min']:.0%}, max {u['max']:.0%}, stdev {u['stdev']:.2f}; "
                f"{d['placed_on_type_queue']} task(s) left on type queues by the balancer")
        rows = [{**w, "util": f"{w['utilization']:.0%}", "share": f"{w['share']:.0%}"} for w in d["workers"]]
        workers = table(rows, [("id", "WORKER"), ("status", "STATUS"), ("slots", "SLOTS"), ("running", "RUNNING"),
                               ("held", "HELD"), ("waiting", "DIRECT WAITING"), ("util", "UTIL"),
                               ("processed", "DONE"), ("share", "SHARE"), ("placed", "PLACED")]) \
            if rows else "no workers registered"
        queues = table(d["queues"], [("type", "TYPE"), ("waiting", "TYPE QUEUE"), ("coordinator", "COORDINATOR")])
        return "\n\n".join([head, workers, queues])
    emit(data, as_json, render)
