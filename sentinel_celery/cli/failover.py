"""``sentinel failover history|dead-letters`` and ``sentinel monitor`` (the failover monitor, standalone)."""
from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime

import click

from sentinel_celery.cli.common import PORT, celery_app, emit, handles_errors, json_option, table
from sentinel_celery.cluster.alerts import AlertEvaluator
from sentinel_celery.cluster.monitor import Monitor
from sentinel_celery.config import get_config
from sentinel_celery.ops.metrics import serve_metrics
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.failovers import read_dead_letters, read_events


def _when(ms) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _event_row(e: dict) -> dict:
    return {**e, "when": _when(e.get("detected_at")),
            "silent": f"{e['silent_ms'] / 1000:.1f}s" if e.get("silent_ms") is not None else "-",
            "tasks": ",".join(t["id"] or "?" for t in e.get("tasks_recovered") or []) or "-",
            "n_tasks": len(e.get("tasks_recovered") or []),
            "dead": len(e.get("dead_lettered") or []), "leases": len(e.get("leases_released") or [])}


EVENT_COLUMNS = [("when", "DETECTED"), ("worker", "WORKER"), ("incarnation", "INC"), ("silent", "SILENT"),
                 ("n_tasks", "RECOVERED"), ("dead", "DEAD-LETTERED"), ("leases", "LEASES FENCED"),
                 ("by", "BY"), ("reason", "REASON")]


@click.group("failover", help="Failover: history of workers declared dead, and dead-lettered tasks.")
def failover_group() -> None:
    pass


@failover_group.command("history", help="Workers declared dead, newest first, with what was recovered.")
@click.option("--limit", type=int, default=20, show_default=True)
@json_option
@handles_errors
def failover_history_cmd(limit, as_json):
    cfg = get_config()
    events = read_events(get_redis(cfg.redis_url), cfg.namespace, limit)
    emit(events, as_json, lambda es: table([_event_row(e) for e in es], EVENT_COLUMNS) if es
         else "no failovers recorded")


@failover_group.command("dead-letters", help="Tasks that killed their worker too often and were not run again.")
@json_option
@handles_errors
def failover_dead_letters(as_json):
    cfg = get_config()
    letters = read_dead_letters(get_redis(cfg.redis_url), cfg.namespace)
    rows = [{**d, "when": _when(d.get("at"))} for d in letters]
    if as_json:
        for row in rows:
            row.pop("message", None)
    emit(rows, as_json, lambda rs: table(rs, [("when", "AT"), ("id", "TASK ID"), ("name", "TASK"),
                                              ("worker", "LAST WORKER"), ("killed", "WORKERS KILLED")])
         if rs else "no dead letters")


@click.command("monitor", help="Run the failover monitor in the foreground (it acts while it holds the "
                               "monitor lease; workers run one too).")
@click.option("--app", "app_path", default=None, help="Celery app to ping workers with (module:attribute); "
                                                       "default: sentinel_celery.app")
@click.option("--once", is_flag=True, help="One pass (take the lease, check, recover), then exit.")
@click.option("--metrics-port", type=PORT, default=None,
              help="Serve /metrics, /health, /cluster/health here (default monitoring.metricsPort; 0 = free port).")
@click.option("--no-metrics", is_flag=True, help="Do not serve metrics.")
@click.option("--alerts/--no-alerts", default=True, show_default=True,
              help="Evaluate the alert rules while this monitor is the leader.")
@json_option
@handles_errors
def monitor_command(app_path, once, metrics_port, no_metrics, alerts, as_json):
    cfg = get_config()
    app = celery_app(app_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def show(event):
        emit(event, as_json, lambda e: f"{_when(e['detected_at'])}  worker {e['worker']} declared dead "
                                        f"({e['reason']}): {len(e['tasks_recovered'])} task(s) recovered, "
                                        f"{len(e['dead_lettered'])} dead-lettered, "
                                        f"{len(e['leases_released'])} lease(s) fenced")

    monitor = Monitor(app, cfg, on_event=show)
    if once:
        monitor.step()
        if not as_json:
            click.echo("monitor: " + ("pass done" if monitor.is_leader else "another monitor holds the lease"))
        monitor.release()
        return
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    click.echo(f"sentinel monitor: {monitor.actor}, stale threshold "
               f"{cfg.get('distributed.heartbeat.staleThresholdMs')} ms; Ctrl-C to stop", err=True)
    server = None
    if not no_metrics:
        server = serve_metrics(cfg, app, port=metrics_port)
        click.echo(f"sentinel monitor: metrics at {server.url}", err=True)
    if alerts:
        evaluator = AlertEvaluator(cfg, app)
        evaluator.start(stopping, should_tick=lambda: monitor.is_leader)
    try:
        monitor.run(stopping)
    finally:
        if server is not None:
            server.stop()
