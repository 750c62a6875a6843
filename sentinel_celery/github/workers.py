"""Worker registry issues: one issue per worker, labelled, closed when it stops or dies, reopened on return.

Labels ``sentinel:worker``, ``queue:<type>``, ``region:<r>``, ``status:<state>``; the body is a table
(host, region, capacity, load, queues, last beat, started). The truth is the registry in Redis,
read every flush (one pipeline); outbox events (``worker`` from the bootstep, ``failover`` from
the monitor) add what the registry cannot say (why it stopped, what was recovered).

Budget: the body is rewritten only on a *meaningful* change — status, queues, capacity, region,
host, incarnation — or at most every ``workerRefreshMinutes`` (load and last beat are "as of
the last update"), never because it beat. Stopping costs a PATCH and one comment; a death a PATCH
and one comment per failover event; a return a PATCH and one comment.

Owns no Redis keys (object entries ``worker:<id>`` in ``github:objects``, see state.py).
"""
from __future__ import annotations

import json
import logging

from sentinel_celery.github import render
from sentinel_celery.github.state import Pending
from sentinel_celery.github.work import FINAL, UPDATE, URGENT, Context, Work
from sentinel_celery.state.registry import OFFLINE, RedisRegistry, WorkerInfo

logger = logging.getLogger(__name__)

LABEL = "sentinel:worker"
STOPPED = "stopped"
CLOSED_STATES = (OFFLINE, STOPPED)


def facts(info: WorkerInfo) -> dict:
    cap = info.capacity
    return {"host": info["hostname"], "region": (info["metadata"] or {}).get("region"),
            "queues": sorted(info["queues"] or []), "slots": info.max_tasks, "cpu": cap.get("cpuCores"),
            "memory": cap.get("memoryMb"), "types": sorted(cap.get("supportedTaskTypes") or []),
            "incarnation": info["incarnation"], "started": info["started"], "nodename": info["nodename"]}


def fingerprint(status: str, f: dict) -> str:
    keep = {k: f.get(k) for k in ("host", "region", "queues", "slots", "cpu", "memory", "types", "incarnation")}
    return render.digest(json.dumps([status, keep], sort_keys=True, default=str))


def labels(status: str, f: dict, task_types: list[str]) -> list[str]:
    types = [q for q in f.get("queues") or [] if q in task_types] or list(f.get("types") or [])
    out = [LABEL, f"status:{status}"] + [f"queue:{t}" for t in types]
    if f.get("region"):
        out.append(f"region:{f['region']}")
    return [render.plain(x, 50) for x in out]


def body(worker_id: str, status: str, f: dict, info: WorkerInfo | None, written_at: float, refresh_min: int) -> str:
    load = "-"
    last_beat = "-"
    processed = "-"
    if info is not None:
        load = f"{info.active}/{info.max_tasks} busy, {int(info['reserved'] or 0)} reserved"
        last_beat = render.when(info["last_beat"])
        processed = f"{int(info['processed'] or 0)} processed, {int(info['failed'] or 0)} failed"
    cap = f"{f.get('slots')} slots · {f.get('cpu') or '?'} CPU · {f.get('memory') or '?'} MB"
    rows = [["status", status], ["host", f.get("host")], ["node", f.get("nodename")], ["region", f.get("region")],
            ["capacity", cap], ["task types", ", ".join(f.get("types") or [])],
            ["queues", ", ".join(f.get("queues") or [])], ["incarnation", f.get("incarnation")],
            ["started", render.when(f.get("started"))], ["load", load], ["tasks", processed],
            ["last beat", last_beat]]
    return render.bound_body("\n".join([
        render.marker("worker", worker_id),
        f"## Worker `{render.cell(worker_id, 100)}` — {status}",
        "",
        render.table(["", ""], rows),
        "",
        f"_Load, tasks and last beat as of {render.when(written_at)}. Sentinel rewrites this issue when the "
        f"worker's status, queues or capacity change, and at most every {refresh_min} minutes otherwise._",
    ]))


def failover_comment(event: dict) -> str:
    tasks = event.get("tasks_recovered") or []
    running = [t for t in tasks if t.get("was_running")]
    lines = [render.marker("failover", event.get("id")),
             f"**Declared dead** at {render.when(event.get('detected_at'))} by {render.text(event.get('by'))} "
             f"after {render.duration((event.get('silent_ms') or 0) / 1000)} without a heartbeat "
             f"({render.text(event.get('reason'))}).", ""]
    if event.get("recovery") is False:
        lines.append("Recovery is disabled (`distributed.heartbeat.recoveryEnabled`): nothing was given back.")
    else:
        lines.append(f"Recovered: {len(tasks)} message(s) given back to their queues ({len(running)} were running), "
                     f"{len(event.get('dead_lettered') or [])} dead-lettered, "
                     f"{len(event.get('leases_released') or [])} lease(s) fenced, "
                     f"{len(event.get('moved_home') or [])} moved home from its direct queue.")
        if tasks:
            lines += ["", render.table(["task", "name", "was running"],
                                       [[t.get("id"), t.get("name"), "yes" if t.get("was_running") else "no"]
                                        for t in tasks[:20]])]
            if len(tasks) > 20:
                lines.append(f"… and {len(tasks) - 20} more.")
        if event.get("leases_released"):
            lines += ["", "Fenced leases: " + ", ".join(f"`{render.cell(n, 80)}`"
                                                         for n in event["leases_released"][:20])]
    return "\n".join(lines)


def plan(ctx: Context, pending: list[Pending], registry: RedisRegistry) -> list[Work]:
    events = {p.key: p for p in pending if p.kind == "worker"}
    failovers = [p for p in pending if p.kind == "failover"]
    if not ctx.mirror_opt("workerIssues"):
        return [Work(UPDATE, "workers (disabled)", None, list(events.values()) + failovers)]
    infos = {w.id: w for w in registry.workers(include_offline=True)}
    cached = {k.split(":", 1)[1]: v for k, v in ctx.state.all_objects("worker:").items()}
    ids = set(infos) | set(cached) | set(events) | {f.state.get("worker") for f in failovers if f.state.get("worker")}
    refresh_s = ctx.mirror_opt("workerRefreshMinutes") * 60
    works = []
    for wid in sorted(ids):
        info, obj = infos.get(wid), dict(cached.get(wid) or {})
        event = events.get(wid)
        fos = [f for f in failovers if f.state.get("worker") == wid]
        covers = ([event] if event else []) + fos
        status = info.status if info is not None else STOPPED
        if info is None and not obj.get("number"):
            if covers:  # never mirrored and already gone: nothing to show
                works.append(Work(UPDATE, f"worker {wid} (gone)", None, covers))
            continue
        f = facts(info) if info is not None else dict(obj.get("facts") or {})
        want_open = status not in CLOSED_STATES
        due = (not obj.get("number") or fingerprint(status, f) != obj.get("fp") or want_open != obj.get("open")
               or (want_open and ctx.now - float(obj.get("written") or 0) > refresh_s)
               or any(render.marker("failover", x.key) not in (obj.get("comments") or []) for x in fos))
        if not due:
            if covers:
                works.append(Work(UPDATE, f"worker {wid} (unchanged)", None, covers))
            continue
        priority = URGENT if status in CLOSED_STATES or fos else (FINAL if not obj.get("number") else UPDATE)
        works.append(Work(priority, f"worker {wid} -> {status}",
                          _sync(ctx, wid, info, obj, status, f, event, fos), covers))
    return works


def _sync(ctx: Context, wid: str, info: WorkerInfo | None, obj: dict, status: str, f: dict,
          event: Pending | None, fos: list[Pending]):
    def run() -> None:
        obj_id = f"worker:{wid}"
        marker = render.marker("worker", wid)
        text = body(wid, status, f, info, ctx.now, ctx.mirror_opt("workerRefreshMinutes"))
        lbls = labels(status, f, ctx.cfg.task_types)
        o, created = ctx.ops.ensure_issue(obj_id, obj, label=LABEL, marker=marker, title=f"Worker {render.plain(wid, 100)}",
                                          body=text, labels=lbls, cold=ctx.cold)
        number = o["number"]
        was_open = bool(o.get("open")) and not created
        want_open = status not in CLOSED_STATES
        fp = fingerprint(status, f)
        if not created or not want_open:
            fields: dict = {"body": text, "labels": lbls}
            if want_open != bool(o.get("open")):
                fields["state"] = "open" if want_open else "closed"
                if not want_open:
                    fields["state_reason"] = "completed" if status == STOPPED else "not_planned"
            if created or fp != o.get("fp") or "state" in fields or \
                    ctx.now - float(o.get("written") or 0) > ctx.mirror_opt("workerRefreshMinutes") * 60:
                ctx.ops.edit_issue(number, **fields)
                o.update(body_digest=render.digest(text), etag=None)
        elif created:
            o.update(body_digest=render.digest(text))
        o.update(open=want_open, fp=fp, written=ctx.now, status=status, facts=f)
        ctx.state.put_object(obj_id, o)
        if want_open and not was_open and not created:
            ctx.ops.comment_once(obj_id, o, number, render.marker("back", f"{wid}:{f.get('incarnation')}"),
                                 render.marker("back", f"{wid}:{f.get('incarnation')}") +
                                 f"\n**Back online** at {render.when(ctx.now)} (incarnation "
                                 f"{render.text(f.get('incarnation'))}); reopened.")
        if status == STOPPED and (was_open or created):
            st = event.state if event is not None else {}
            m = render.marker("stopped", f"{wid}:{f.get('incarnation')}")
            ctx.ops.comment_once(obj_id, o, number, m,
                                 m + f"\n**Stopped** at {render.when(st.get('at') or ctx.now)} "
                                     f"({render.text(st.get('reason') or 'warm shutdown, deregistered')}); "
                                     f"{render.text(st.get('processed', '?'))} task(s) processed by this incarnation.")
        for fo in fos:
            ctx.ops.comment_once(obj_id, o, number, render.marker("failover", fo.key), failover_comment(fo.state))
    return run
