"""``sentinel workers ...`` (the registry, capacity, drain, cleanup) and ``sentinel worker status``."""
from __future__ import annotations

import click

from sentinel_celery.cli.common import celery_app, emit, fail, handles_errors, json_option, table
from sentinel_celery.cluster.drain import DrainError, drain
from sentinel_celery.cluster.failover import Failover, WorkerStillAlive
from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import get_backend
from sentinel_celery.state.logs import LogQuery, format_entry, query
from sentinel_celery.state.registry import get_registry


@click.group("workers", help="The worker registry.")
def workers() -> None:
    pass


def _registry():
    return get_registry()


@workers.command("list", help="Workers with their state (online/stale/offline), incarnation and load.")
@click.option("--all", "include_offline", is_flag=True, default=True, help="Include offline workers (default).")
@json_option
@handles_errors
def workers_list(include_offline, as_json):
    rows = []
    for w in _registry().workers(include_offline=include_offline):
        d = w.as_dict()
        rows.append({**d, "region": (d.get("metadata") or {}).get("region"),
                     "load": f"{w.active}/{w.max_tasks}", "beat_age": f"{w.age_ms / 1000:.1f}s"})
    emit(rows, as_json, lambda rs: table(rs, [
        ("id", "WORKER"), ("status", "STATUS"), ("incarnation", "INC"), ("hostname", "HOST"),
        ("region", "REGION"), ("queues", "QUEUES"), ("load", "LOAD"), ("processed", "DONE"),
        ("failed", "FAILED"), ("beat_age", "LAST BEAT")]) if rs else "no workers registered")


@workers.command("capacity", help="Capacity per worker and per task type.")
@json_option
@handles_errors
def workers_capacity(as_json):
    rows, by_type = [], {}
    for w in _registry().workers(include_offline=False):
        cap = w.capacity
        types = cap.get("supportedTaskTypes") or []
        rows.append({"id": w.id, "status": w.status, "slots": w.max_tasks, "active": w.active,
                     "free": max(w.max_tasks - w.active, 0), "cpuCores": cap.get("cpuCores"),
                     "memoryMb": cap.get("memoryMb"), "types": types})
        if w.status == "online":
            for t in types:
                agg = by_type.setdefault(t, {"type": t, "workers": 0, "slots": 0, "active": 0})
                agg["workers"] += 1
                agg["slots"] += w.max_tasks
                agg["active"] += w.active
    data = {"workers": rows, "by_type": sorted(by_type.values(), key=lambda r: r["type"])}

    def render(d):
        if not d["workers"]:
            return "no workers registered"
        return table(d["workers"], [("id", "WORKER"), ("status", "STATUS"), ("slots", "SLOTS"),
                                     ("active", "ACTIVE"), ("free", "FREE"), ("cpuCores", "CPU"),
                                     ("memoryMb", "MEM MB"), ("types", "TYPES")]) + "\n\n" + table(
            d["by_type"], [("type", "TYPE"), ("workers", "WORKERS"), ("slots", "SLOTS"), ("active", "ACTIVE")])
    emit(data, as_json, render)


@workers.command("drain", help="Stop a worker taking work, let it finish what it holds, then warm-stop it.")
@click.argument("worker_id")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for its tasks (default: "
              "distributed.autoscale.drainTimeoutSeconds).")
@click.option("--keep-running", is_flag=True, help="Stop consuming and finish, but do not shut it down.")
@json_option
@handles_errors
def workers_drain(worker_id, timeout, keep_running, as_json):
    try:
        result = drain(celery_app(), worker_id, timeout=timeout, shutdown=not keep_running,
                       progress=None if as_json else (lambda msg: click.echo(f"{worker_id}: {msg}")))
    except DrainError as exc:
        fail(str(exc), code=1)
    if as_json:
        emit(result.as_dict(), True, str)


@workers.command("cleanup", help="Declare a worker you know is gone dead now: fence its leases, give its "
                                 "tasks back to their queues, record a failover event.")
@click.option("--worker-id", required=True)
@click.option("--force", is_flag=True, help="Even if it still beats (it will be fenced and re-register).")
@json_option
@handles_errors
def workers_cleanup(worker_id, force, as_json):
    cfg = get_config()
    try:
        event = Failover(celery_app(), cfg, actor="cli").cleanup(worker_id, force=force)
    except (LookupError, WorkerStillAlive) as exc:
        fail(str(exc.args[0] if exc.args else exc), code=1)
    emit(event, as_json, lambda e: f"worker {worker_id}: {len(e['tasks_recovered'])} task(s) given back, "
                                   f"{len(e['dead_lettered'])} dead-lettered, leases fenced: "
                                   f"{', '.join(e['leases_released']) or 'none'}")


@click.group("worker", help="One worker.")
def worker() -> None:
    pass


@worker.command("status", help="One worker's details: registry entry, load, leases held, recent logs.")
@click.argument("worker_id")
@click.option("--log-lines", type=int, default=10, show_default=True, help="Recent log records to show.")
@json_option
@handles_errors
def worker_status(worker_id, log_lines, as_json):
    cfg = get_config()
    info = get_registry(cfg).get(worker_id)
    if info is None:
        fail(f"no worker '{worker_id}' in the registry (see `sentinel workers list`)", code=1)
    leases = get_backend().held_by(worker_id)
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
