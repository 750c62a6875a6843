"""The dashboard issue (``sentinel:dashboard``) and one issue per alert (``sentinel:alert``).

The dashboard is rendered every flush from the truth in Redis — workers (registry), queue lengths
(broker lists), held leases, recent failover events, firing alerts — and written only when its
content changed, and at most every ``dashboardMinIntervalMs``. Volatile numbers are bucketed
(utilization to 10 %, queue lengths to one significant digit, lease expiry to 5 minutes) so that a
busy cluster does not change it every flush.

Alert issues follow alerts.py's transitions (``alert`` events: op open/update/close): opened once,
edited on update, closed on resolve, reopened if the alert fires again; the issue number is
recorded in ``alerts:issues`` for alerts.py.

Owns no Redis keys of its own (object entries ``dashboard`` and ``alert:<name>`` in
``github:objects``; writes ``alerts:issues`` on behalf of alerts.py).
"""
from __future__ import annotations

import json
import logging
import math

from sentinel_celery.broker.factory import broker_for_config
from sentinel_celery.github import render
from sentinel_celery.github.state import Pending
from sentinel_celery.github.work import BACKGROUND, UPDATE, Context, Work
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.leases import RedisLeaseBackend
from sentinel_celery.state.registry import RedisRegistry

logger = logging.getLogger(__name__)

LABEL = "sentinel:dashboard"
ALERT_LABEL = "sentinel:alert"
MARKER = render.marker("dashboard", "cluster")


def _expiry_bucket(expires_ms) -> str:
    if not expires_ms:
        return "-"
    five = 300_000
    return "≤ " + render.when(math.ceil(int(expires_ms) / five) * five)[11:16] + " UTC"


def gather(ctx: Context, registry: RedisRegistry) -> dict:
    client, ns = ctx.state.client, ctx.state.ns
    workers = registry.workers(include_offline=True)
    queues = sorted(set(ctx.cfg.task_types) | {"celery"})
    depths: dict[str, int] = {}
    try:
        depths = broker_for_config(ctx.cfg, client=client).depths(queues)
    except Exception as exc:  # the dashboard shows what it can
        logger.debug("sentinel: dashboard cannot read queue lengths: %s", exc)
    leases = RedisLeaseBackend(client, ns).held()
    failovers = read_events(client, ns, 5)
    alerts = sorted((json.loads(v) for v in client.hgetall(f"{ns}alerts:firing").values()),
                    key=lambda a: a.get("name", ""))
    return {"workers": workers, "depths": depths, "leases": leases, "failovers": failovers, "alerts": alerts}


def render_dashboard(data: dict) -> str:
    workers = data["workers"]
    live = [w for w in workers if w.status != "offline"]
    slots = sum(w.max_tasks for w in live if w.status in ("online", "draining", "stopping"))
    busy = sum(w.active for w in live if w.status in ("online", "draining", "stopping"))
    util = f"~{round(10 * busy / slots) * 10}%" if slots else "-"
    counts: dict[str, int] = {}
    for w in workers:
        counts[w.status] = counts.get(w.status, 0) + 1
    lines = [MARKER, "## Sentinel dashboard", "",
             "**Workers:** " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none") +
             f" · **utilization** {util} of {slots} slot(s)", ""]
    if workers:
        lines += [render.table(["worker", "status", "region", "queues", "slots"],
                               [[w.id, w.status, (w["metadata"] or {}).get("region"),
                                 ", ".join(w["queues"] or []), w.max_tasks] for w in workers[:50]]), ""]
    lines += ["**Queues** (waiting messages, rounded)", "",
              render.table(["queue", "waiting"], [[q, render.bucket(n)] for q, n in sorted(data["depths"].items())]),
              ""]
    lines += ["**Held leases**", ""]
    if data["leases"]:
        lines += [render.table(["key", "holder", "token", "since", "expires"],
                               [[l["name"], l.get("worker") or l.get("owner", "").split(":")[0], l["token"],
                                 render.when(l.get("acquired")), _expiry_bucket(l.get("expires"))]
                                for l in data["leases"][:30]]), ""]
    else:
        lines += ["none", ""]
    lines += ["**Recent failovers**", ""]
    if data["failovers"]:
        lines += [render.table(["when", "worker", "given back", "dead-lettered", "leases fenced"],
                               [[render.when(e.get("detected_at")), e.get("worker"), len(e.get("tasks_recovered") or []),
                                 len(e.get("dead_lettered") or []), len(e.get("leases_released") or [])]
                                for e in data["failovers"]]), ""]
    else:
        lines += ["none", ""]
    lines += ["**Active alerts**", ""]
    if data["alerts"]:
        lines += [render.table(["alert", "severity", "since", "summary"],
                               [[a.get("name"), a.get("severity"), render.when(a.get("since")), a.get("summary")]
                                for a in data["alerts"]]), ""]
    else:
        lines += ["none", ""]
    return render.bound_body("\n".join(lines))


def plan_dashboard(ctx: Context, pending: list[Pending], registry: RedisRegistry) -> list[Work]:
    covers = [p for p in pending if p.kind in ("dashboard", "lease")]
    if not ctx.mirror_opt("dashboard"):
        return [Work(BACKGROUND, "dashboard (disabled)", None, covers)] if covers else []
    content = render_dashboard(gather(ctx, registry))
    d = render.digest(content)
    obj = ctx.state.object("dashboard") or {}
    if obj.get("number") and obj.get("digest") == d:
        return [Work(BACKGROUND, "dashboard (unchanged)", None, covers)] if covers else []
    if obj.get("number") and ctx.now - float(obj.get("written") or 0) < ctx.mirror_opt("dashboardMinIntervalMs") / 1000:
        return []  # changed, but written recently: the next flush after the interval writes it

    def run() -> None:
        body = content + f"\n_Updated by Sentinel at {render.when(ctx.now)}._"
        o, created = ctx.ops.ensure_issue("dashboard", dict(obj), label=LABEL, marker=MARKER,
                                          title="Sentinel dashboard", body=body, labels=[LABEL], cold=ctx.cold)
        if not created:
            fields = {"body": body}
            if not o.get("open", True):
                fields["state"] = "open"
            ctx.ops.edit_issue(o["number"], **fields)
        o.update(digest=d, written=ctx.now, open=True, body_digest=render.digest(body), etag=None)
        ctx.state.put_object("dashboard", o)
    return [Work(BACKGROUND, "dashboard", run, covers)]


# -- alert issues --------------------------------------------------------------------------------
def plan_alerts(ctx: Context, pending: list[Pending]) -> list[Work]:
    entries = [p for p in pending if p.kind == "alert"]
    if not entries:
        return []
    if not ctx.mirror_opt("alertIssues"):
        return [Work(BACKGROUND, "alerts (disabled)", None, entries)]
    return [Work(UPDATE, f"alert {p.key}", _sync_alert(ctx, p), [p]) for p in entries]


def _sync_alert(ctx: Context, p: Pending):
    def run() -> None:
        st = p.state
        obj_id = f"alert:{p.key}"
        obj = ctx.state.object(obj_id) or {}
        closing = st.get("op") == "close"
        if closing and not obj.get("number") and not ctx.cold:
            return  # resolved before it was ever shown
        marker = render.marker("alert", p.key)
        body = marker + "\n" + render.markdown(st.get("body") or st.get("summary") or "")
        title = render.plain(st.get("title") or f"[sentinel alert] {p.key}", 200)
        labels = [ALERT_LABEL] + [f"severity:{render.plain(st['severity'], 30)}"] if st.get("severity") else [ALERT_LABEL]
        if closing and not obj.get("number"):
            issue = ctx.ops.find_by_marker(ALERT_LABEL, marker)
            if issue is None:
                return
            obj.update(number=issue["number"], open=issue["state"] == "open")
        o, created = ctx.ops.ensure_issue(obj_id, obj, label=ALERT_LABEL, marker=marker, title=title, body=body,
                                          labels=labels, cold=ctx.cold)
        want_open = not closing
        d = render.digest(title + body)
        if not created and (d != o.get("digest") or want_open != bool(o.get("open"))):
            fields = {"title": title, "body": body, "labels": labels}
            if want_open != bool(o.get("open")):
                fields["state"] = "open" if want_open else "closed"
            ctx.ops.edit_issue(o["number"], **fields)
        o.update(digest=d, open=want_open, body_digest=render.digest(body), etag=None)
        ctx.state.put_object(obj_id, o)
        ctx.state.client.hset(f"{ctx.state.ns}alerts:issues", p.key, o["number"])
    return run
