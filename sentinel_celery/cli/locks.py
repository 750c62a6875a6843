"""``sentinel locks ...``: leases held, their counters, their spread over workers, manual fencing."""
from __future__ import annotations

import click

from sentinel_celery.cli.common import emit, fail, handles_errors, json_option, table
from sentinel_celery.state.leases import get_backend
from sentinel_celery.state.registry import get_registry


@click.group("locks", help="Fenced leases (locks).")
def locks() -> None:
    pass


def _leases():
    return get_backend()


@locks.command("list", help="Leases held now: key, holder, fencing token, time left.")
@json_option
@handles_errors
def locks_list(as_json):
    rows = [{**h, "expires_in": f"{h['ttl_ms'] / 1000:.1f}s"} for h in _leases().held()]
    emit(rows, as_json, lambda rs: table(rs, [("name", "LEASE"), ("worker", "WORKER"), ("token", "TOKEN"),
                                              ("task_id", "TASK"), ("expires_in", "EXPIRES IN")])
         if rs else "no leases held")


STAT_METRICS = ("acquisitions", "conflicts", "waits", "releases", "lost", "fenced")


@locks.command("stats", help="Per-lease counters, sorted by --metric.")
@click.option("--metric", type=click.Choice(STAT_METRICS), default="acquisitions")
@click.option("--limit", type=int, default=50)
@json_option
@handles_errors
def locks_stats(metric, limit, as_json):
    rows = sorted(_leases().stats(), key=lambda r: r[metric], reverse=True)[:limit]
    emit(rows, as_json, lambda rs: table(rs, [("name", "LEASE"), *[(m, m.upper()) for m in STAT_METRICS],
                                              ("last_token", "LAST TOKEN"), ("holder_worker", "HELD BY")])
         if rs else "no leases used yet")


@locks.command("distribution", help="How leases are spread over workers: held now and acquired last.")
@json_option
@handles_errors
def locks_distribution(as_json):
    backend = _leases()
    dist: dict[str, dict] = {}
    for h in backend.held():
        dist.setdefault(h.get("worker") or "-", {"worker": h.get("worker") or "-", "held": 0, "last_acquired": 0})[
            "held"] += 1
    for s in backend.stats():
        w = s.get("last_worker") or "-"
        dist.setdefault(w, {"worker": w, "held": 0, "last_acquired": 0})["last_acquired"] += 1
    rows = sorted(dist.values(), key=lambda r: (-r["held"], r["worker"]))
    emit(rows, as_json, lambda rs: table(rs, [("worker", "WORKER"), ("held", "HELD NOW"),
                                              ("last_acquired", "LEASES LAST TAKEN")]) if rs else "no leases used yet")


@locks.command("cleanup", help="Fence every lease a worker you know is gone still holds.")
@click.option("--worker-id", required=True)
@click.option("--force", is_flag=True, help="Even if the worker still beats.")
@json_option
@handles_errors
def locks_cleanup(worker_id, force, as_json):
    info = get_registry().get(worker_id)
    if info is not None and info.status in ("online", "stopping") and not force:
        fail(f"worker '{worker_id}' is {info.status} (beat {info.age_ms / 1000:.1f}s ago); stop it first, or "
             f"pass --force", code=1)
    released = get_backend().fence_worker(worker_id)
    emit({"worker": worker_id, "released": released}, as_json,
         lambda d: f"fenced {len(d['released'])} lease(s) of {worker_id}" +
                   (": " + ", ".join(d["released"]) if d["released"] else ""))
