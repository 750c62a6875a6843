"""Failover commands: ``sentinel failover history|dead-letters``, ``sentinel monitor``, and the
operator's ``sentinel workers cleanup`` / ``sentinel locks cleanup`` for a worker known to be gone."""
from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime

import click

from .cli import celery_app, emit, fail, handles_errors, json_option, locks, table, workers
from .config import get_config
from .connection import get_redis


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
    from .failover import read_events
    cfg = get_config()
    events = read_events(get_redis(cfg.redis_url), cfg.namespace, limit)
    emit(events, as_json, lambda es: table([_event_row(e) for e in es], EVENT_COLUMNS) if es
         else "no failovers recorded")


@failover_group.command("dead-letters", help="Tasks that killed their worker too often and were not run again.")
@json_option
@handles_errors
def failover_dead_letters(as_json):
    from .failover import read_dead_letters
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
@click.option("--metrics-port", type=int, default=None,
              help="Serve /metrics, /health, /cluster/health here (default monitoring.metricsPort; 0 = free port).")
@click.option("--no-metrics", is_flag=True, help="Do not serve metrics.")
@click.option("--alerts/--no-alerts", default=True, show_default=True,
              help="Evaluate the alert rules while this monitor is the leader.")
@json_option
@handles_errors
def monitor_command(app_path, once, metrics_port, no_metrics, alerts, as_json):
    from .monitor import Monitor
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
        from .metrics import serve_metrics
        server = serve_metrics(cfg, app, port=metrics_port)
        click.echo(f"sentinel monitor: metrics at {server.url}", err=True)
    if alerts:
        from .alerts import AlertEvaluator
        evaluator = AlertEvaluator(cfg, app)
        evaluator.start(stopping, should_tick=lambda: monitor.is_leader)
    try:
        monitor.run(stopping)
    finally:
        if server is not None:
            server.stop()


@workers.command("cleanup", help="Declare a worker you know is gone dead now: fence its leases, give its "
                                 "tasks back to their queues, record a failover event.")
@click.option("--worker-id", required=True)
@click.option("--force", is_flag=True, help="Even if it still beats (it will be fenced and re-register).")
@json_option
@handles_errors
def workers_cleanup(worker_id, force, as_json):
    from .failover import Failover, WorkerStillAlive
    cfg = get_config()
    try:
        event = Failover(celery_app(), cfg, actor="cli").cleanup(worker_id, force=force)
    except (LookupError, WorkerStillAlive) as exc:
        fail(str(exc.args[0] if exc.args else exc), code=1)
    emit(event, as_json, lambda e: f"worker {worker_id}: {len(e['tasks_recovered'])} task(s) given back, "
                                   f"{len(e['dead_lettered'])} dead-lettered, leases fenced: "
                                   f"{', '.join(e['leases_released']) or 'none'}")


@locks.command("cleanup", help="Fence every lease a worker you know is gone still holds.")
@click.option("--worker-id", required=True)
@click.option("--force", is_flag=True, help="Even if the worker still beats.")
@json_option
@handles_errors
def locks_cleanup(worker_id, force, as_json):
    from .bootsteps import get_registry
    from .leases import get_backend
    info = get_registry().get(worker_id)
    if info is not None and info.status in ("online", "stopping") and not force:
        fail(f"worker '{worker_id}' is {info.status} (beat {info.age_ms / 1000:.1f}s ago); stop it first, or "
             f"pass --force", code=1)
    released = get_backend().fence_worker(worker_id)
    emit({"worker": worker_id, "released": released}, as_json,
         lambda d: f"fenced {len(d['released'])} lease(s) of {worker_id}" +
                   (": " + ", ".join(d["released"]) if d["released"] else ""))
