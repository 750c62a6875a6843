"""Operations commands: ``worker status``, ``logs``, ``metrics serve``, ``alerts list|check``.

Registered by ``cli.py``; each prints a table (or log lines) for people and JSON with ``--json``.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time

import click

from .cli import emit, fail, handles_errors, json_option, table
from .config import get_config


# -- worker status ------------------------------------------------------------------------------------
@click.group("worker", help="One worker.")
def worker() -> None:
    pass


@worker.command("status", help="One worker's details: registry entry, load, leases held, recent logs.")
@click.argument("worker_id")
@click.option("--log-lines", type=int, default=10, show_default=True, help="Recent log records to show.")
@json_option
@handles_errors
def worker_status(worker_id, log_lines, as_json):
    from .bootsteps import get_registry
    from .connection import get_redis
    from .leases import get_backend
    from .logs import LogQuery, format_entry, query
    cfg = get_config()
    info = get_registry(cfg).get(worker_id)
    if info is None:
        fail(f"no worker '{worker_id}' in the registry (see `sentinel workers list`)", code=1)
    backend = get_backend()
    names = sorted(backend.client.smembers(backend.worker_key(worker_id)))
    leases = [h for h in (backend.holder(n) for n in names) if h and h.get("worker") == worker_id]
    logs = query(get_redis(cfg.redis_url), cfg.namespace, LogQuery(worker=worker_id), limit=log_lines) \
        if log_lines > 0 else []
    data = {**info.as_dict(), "leases": leases, "recent_logs": logs}

    def render(d):
        cap = d.get("capacity") or {}
        fields = [
            ("worker", d["id"]), ("status", d["status"]), ("incarnation", d.get("incarnation")),
            ("node", d.get("nodename")), ("host / pid", f"{d.get('hostname')} / {d.get('pid')}"),
            ("region", (d.get("metadata") or {}).get("region")), ("queues", ",".join(d.get("queues") or [])),
            ("load", f"{d.get('active') or 0} active, {d.get('reserved') or 0} reserved of "
                     f"{d.get('concurrency') or cap.get('maxConcurrentTasks')} slots ({d['utilization']:.0%})"),
            ("done / failed", f"{d.get('processed') or 0} / {d.get('failed') or 0}"),
            ("capacity", f"{cap.get('cpuCores')} cpu, {cap.get('memoryMb')} MB, types "
                         f"{','.join(cap.get('supportedTaskTypes') or [])}"),
            ("last heartbeat", f"{d['age_ms'] / 1000:.1f}s ago"), ("version", d.get("version")),
        ]
        out = "\n".join(f"{k:<16}{'-' if v is None else v}" for k, v in fields)
        out += "\n\nleases held:\n" + (table([{**h, "left": f"{h['ttl_ms'] / 1000:.1f}s"} for h in d["leases"]],
                                             [("name", "LEASE"), ("token", "TOKEN"), ("task_id", "TASK"),
                                              ("left", "EXPIRES IN")]) if d["leases"] else "  none")
        if d["recent_logs"]:
            out += "\n\nrecent logs:\n" + "\n".join("  " + format_entry(e) for e in d["recent_logs"])
        return out
    emit(data, as_json, render)


# -- logs ---------------------------------------------------------------------------------------------
@click.command("logs", help="Worker and task logs from every host (the Redis log stream).")
@click.option("--worker", "worker_id", help="Only this worker.")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
              help="Minimum level.")
@click.option("--since", help="Only newer than this: 30s, 10m, 2h, 1d.")
@click.option("--search", help="Case-insensitive text in the message.")
@click.option("--task", "task_id", help="Only this task id.")
@click.option("--limit", "-n", type=int, default=100, show_default=True, help="At most this many (newest).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records (Ctrl-C stops).")
@json_option
@handles_errors
def logs_command(worker_id, level, since, search, task_id, limit, follow, as_json):
    from .connection import get_redis
    from .logs import LogQuery, follow as follow_stream, format_entry, parse_since, query, since_ms, to_json_line
    cfg = get_config()
    client = get_redis(cfg.redis_url)
    try:
        since_at = since_ms(client, parse_since(since)) if since else None
    except ValueError as exc:
        fail(str(exc), code=2)
    q = LogQuery(worker=worker_id, level=level.upper() if level else None, since_ms=since_at, search=search,
                 task_id=task_id)
    entries = query(client, cfg.namespace, q, limit=limit)
    if not follow:
        if as_json:
            click.echo(json.dumps(entries, indent=2, sort_keys=True))
        elif entries:
            click.echo("\n".join(format_entry(e) for e in entries))
        else:
            click.echo("no log records match", err=True)
        return
    for e in entries:
        click.echo(to_json_line(e) if as_json else format_entry(e))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    start = entries[-1]["id"] if entries else "$"
    try:
        for e in follow_stream(client, cfg.namespace, q, start_id=start, stop=stop):
            click.echo(to_json_line(e) if as_json else format_entry(e))
    except KeyboardInterrupt:
        pass


# -- metrics ------------------------------------------------------------------------------------------
@click.group("metrics", help="The Prometheus / JSON metrics endpoint.")
def metrics_group() -> None:
    pass


@metrics_group.command("serve", help="Serve /metrics, /health, /cluster/health and /cluster/metrics (foreground), "
                                      "and evaluate the alert rules every monitoring.alerts.intervalMs.")
@click.option("--host", default=None, help="Default: monitoring.metricsHost (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: monitoring.metricsPort (9808); 0 picks a free one.")
@click.option("--alerts/--no-alerts", default=True, show_default=True,
              help="Evaluate alerts here too (safe with several evaluators: each alert is announced once).")
@handles_errors
def metrics_serve(host, port, alerts):
    from .alerts import AlertEvaluator
    from .connection import get_redis
    from .metrics import serve_metrics
    cfg = get_config()
    get_redis(cfg.redis_url).ping()  # fail now, with one clear line, rather than on the first scrape
    try:
        server = serve_metrics(cfg, host=host, port=port)
    except OSError as exc:
        fail(f"cannot listen on {host or cfg.get('monitoring.metricsHost')}:"
             f"{port if port is not None else cfg.get('monitoring.metricsPort')}: {exc}", code=1)
    click.echo(f"sentinel metrics: {server.url}/metrics  (also /health, /cluster/health, /cluster/metrics)"
               + ("; evaluating alerts" if alerts else ""))
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    if alerts:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        AlertEvaluator(cfg).start(stop)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()


# -- alerts -------------------------------------------------------------------------------------------
@click.group("alerts", help="Alert rules and the alerts firing now.")
def alerts_group() -> None:
    pass


@alerts_group.command("list", help="Alerts firing now (as last evaluated by the monitor).")
@json_option
@handles_errors
def alerts_list(as_json):
    from .alerts import AlertState
    from .connection import get_redis
    cfg = get_config()
    firing = sorted(AlertState(get_redis(cfg.redis_url), cfg.namespace).firing().values(), key=lambda a: a["name"])
    rows = [{**a, "for": f"{time.time() - a['since']:.0f}s"} for a in firing]
    emit(rows, as_json, lambda rs: table(rs, [("name", "ALERT"), ("severity", "SEVERITY"), ("for", "FOR"),
                                              ("summary", "SUMMARY")]) if rs else "no alerts firing")


@alerts_group.command("check", help="Evaluate the rules now, update the firing set and notify sinks; "
                                    "exit code 1 if a critical alert fires.")
@json_option
@handles_errors
def alerts_check(as_json):
    from .alerts import CRITICAL, AlertEvaluator, WebhookSink
    evaluator = AlertEvaluator(get_config())
    transitions = evaluator.tick()
    for sink in evaluator.sinks:
        if isinstance(sink, WebhookSink):
            sink.join(timeout=30)
    firing = sorted(evaluator.state.firing().values(), key=lambda a: a["name"])
    data = {"firing": firing, "transitions": [{"op": t.op, "alert": t.alert["name"]} for t in transitions]}
    emit(data, as_json, lambda d: "\n".join(
        [f"{t['op']:<6} {t['alert']}" for t in d["transitions"]] +
        [f"firing {a['severity']:<8} {a['summary']}" for a in d["firing"]]) or "no alerts firing")
    if any(a["severity"] == CRITICAL for a in firing):
        sys.exit(1)
