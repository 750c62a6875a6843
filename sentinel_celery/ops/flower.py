"""Flower with a Sentinel tab, for ``sentinel flower`` (``celery -A sentinel_celery flower`` also works, unchanged).

``sentinel flower`` builds Flower's own tornado application exactly as ``celery flower`` does (same
options, environment variables ``FLOWER_*``, and auth), then adds two handlers that subclass Flower's
``BaseHandler`` and are guarded by ``@web.authenticated``, so Flower's ``--basic-auth`` / OAuth
apply to them unchanged:

  /sentinel        a Flower page: rendered with Flower's own ``base.html`` (its CSS, scripts, theme
                   switch) and navbar, which gets a "Sentinel" item on every Flower page. Tables:
                   workers (state, load, region, incarnation, last beat; each links to Flower's own
                   worker page), queues, job leases with their fencing tokens, the cluster's leader
                   leases, alerts firing, failover history, GitHub mirror status. It refreshes its
                   tables every few seconds while Flower's ``auto_refresh`` option is on, as Flower's
                   pages do (``?autorefresh=N`` sets the seconds, ``?autorefresh=0`` stops it)
  /sentinel?partial=1  the tables alone (what the refresh fetches)
  /sentinel/api    the same data as JSON

The templates are ops/templates/sentinel*.html, loaded beside Flower's by :class:`SentinelTemplates`.
Flower's task pages need task events from the workers: start workers with ``-E``, or set
``monitoring.taskEvents`` (costs throughput; see docs/operations.md). The Sentinel page reads Redis
and needs no events.

The command itself is cli/flower.py.

Redis keys: none of its own (it reads what cluster/snapshot.py reads).
"""
from __future__ import annotations

import json
import os
import time

from flower.app import Flower
from flower.command import apply_env_options, apply_options, extract_settings, setup_logging
from flower.urls import settings
from flower.views import BaseHandler
from tornado import template, web
from tornado.escape import xhtml_escape as esc
from tornado.options import options

from sentinel_celery.cluster.snapshot import collect_snapshot, failover_history, split_leases
from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import RedisLeaseBackend


def page_data(cfg, app=None) -> dict:
    client = get_redis(cfg.redis_url)
    snap = collect_snapshot(cfg, app, client)
    return {"time": snap["time"], "workers": snap["workers"], "queues": snap["queues"],
            "leases": RedisLeaseBackend(client, cfg.namespace).held(), "alerts": snap["alerts"],
            "failover": failover_history(cfg, client, limit=20), "github": snap["github"]}


TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
REFRESH_SECONDS = 5
#: the item added to Flower's own navbar, after its last tab (Broker)
NAV_ITEM = """
        <li class="nav-item">
          <a class="nav-link{% if active_tab == 'sentinel' %} active{% end %}"
            href="{{ reverse_url('sentinel') }}"
            {% if active_tab == 'sentinel' %}aria-current="page"{% end %}>Sentinel</a>
        </li>
"""


class SentinelTemplates(template.Loader):
    """Flower's template directory, with our pages beside it and a Sentinel item in Flower's navbar.

    Flower's own ``navbar.html`` is read as shipped and the item inserted before the end of its
    first list (the tabs), so every Flower page shows the tab; if a Flower release changes that
    markup, the navbar stays Flower's unchanged and the page is still at /sentinel."""

    def __init__(self, flower_templates: str, **kwargs):
        super().__init__(flower_templates, **kwargs)
        self.flower_templates = flower_templates

    def resolve_path(self, name, parent_path=None):
        return name

    def _create_template(self, name):
        if name.startswith("sentinel"):
            path = os.path.join(TEMPLATES, name)
        else:
            path = os.path.join(self.flower_templates, name)
        with open(path, "rb") as f:
            text = f.read().decode()
        if name == "navbar.html" and "Sentinel" not in text:
            tabs_end = text.find("</ul>")
            if tabs_end != -1:
                text = text[:tabs_end] + NAV_ITEM.lstrip("\n") + "      " + text[tabs_end:]
        return template.Template(text, name=name, loader=self)


def _cell(value) -> str:
    return esc("-" if value is None or value == "" else str(value))


def _badge(status: str) -> str:
    kind = {"online": "bg-success", "draining": "text-bg-warning", "stopping": "text-bg-warning",
            "stale": "text-bg-danger", "offline": "bg-secondary"}.get(status, "text-bg-secondary")
    return f'<span class="badge {kind}">{esc(status)}</span>'


def _when(ms) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else "-"


def page_tables(data: dict, worker_url) -> dict:
    """What sentinel_tables.html shows; ``worker_url(nodename)`` links a worker to Flower's worker page.
    Every cell is HTML-escaped here (the template writes cells raw, for links and badges)."""
    workers = data["workers"]
    job_leases, cluster_leases = split_leases(data["leases"])

    def worker_link(w):
        name = esc(w["id"])
        return f'<a href="{esc(worker_url(w["nodename"]))}">{name}</a>' if w.get("nodename") else name

    worker_rows = [[worker_link(w), _badge(w["status"]), _cell(f"{w['active']}/{w['capacity']}"),
                    _cell(f"{w['utilization']:.0%}"), _cell(", ".join(w["queues"])), _cell(w["region"]),
                    _cell(w["hostname"]), _cell(w["incarnation"]), _cell(w["processed"]), _cell(w["failed"]),
                    _cell(f"{w['age_ms'] / 1000:.1f}s ago")] for w in workers]
    queue_rows = [[_cell(q), _cell(v["length"]), _cell(v["oldest_age_seconds"])]
                  for q, v in sorted(data["queues"].items())]

    def lease_rows(leases):
        return [[_cell(h["name"]), _cell(h.get("worker")), f'<span class="font-monospace">{_cell(h["token"])}</span>',
                 _cell(h.get("task_id")), _cell(f"{h['ttl_ms'] / 1000:.1f}s")] for h in leases]
    alert_rows = [[_cell(a.get("name")), _cell(a.get("severity")), _cell(a.get("summary")),
                   _cell(_when((a.get("since") or 0) * 1000))] for a in data["alerts"]]
    failover = data["failover"] or []
    failover_rows = [[_cell(_when(e.get("detected_at"))), _cell(e.get("worker")), _cell(e.get("incarnation")),
                      _cell(len(e.get("tasks_recovered") or [])), _cell(len(e.get("leases_released") or [])),
                      _cell(e.get("reason")), _cell(e.get("by"))] for e in failover]
    github = data["github"] or {}
    github_rows = [[_cell(k), _cell(json.dumps(v) if isinstance(v, (dict, list)) else v)]
                   for k, v in sorted(github.items())]
    lease_headers = ("Lease", "Worker", "Fencing token", "Task", "Expires in")
    return {
        "workers": workers, "online": sum(1 for w in workers if w["status"] == "online"),
        "running": sum(w["active"] for w in workers if w["status"] != "offline"),
        "job_leases": job_leases, "alerts": data["alerts"],
        "sections": [
            ("Workers", "sentinel-workers", ("Worker", "State", "Load", "Utilization", "Queues", "Region", "Host",
                                            "Incarnation", "Processed", "Failed", "Last heartbeat"),
             worker_rows, "No workers registered."),
            ("Queues", "sentinel-queues", ("Queue", "Waiting", "Oldest (s)"), queue_rows, "No queues."),
            ("Job leases", "sentinel-leases", lease_headers, lease_rows(job_leases), "No job leases held."),
            ("Cluster leader leases", "sentinel-leader-leases", lease_headers, lease_rows(cluster_leases),
             "No leader elected (no worker or monitor running)."),
            ("Alerts firing", "sentinel-alerts", ("Alert", "Severity", "Summary", "Since"), alert_rows,
             "No alerts firing."),
            ("Failover history", "sentinel-failovers", ("Detected", "Worker", "Incarnation", "Tasks given back",
                                                        "Leases fenced", "Reason", "By"), failover_rows,
             "No failovers recorded."),
            ("GitHub mirror", "sentinel-github", ("Field", "Value"), github_rows,
             "No mirror status yet (the mirror is not running or GitHub is not configured)."),
        ],
    }


def sentinel_handlers(url_prefix: str = "") -> list:
    class SentinelView(BaseHandler):
        async def data(self):
            return await self.application.io_loop.run_in_executor(None, page_data, get_config(), self.capp)

        @web.authenticated
        async def get(self):
            data = await self.data()
            tables = page_tables(data, lambda nodename: self.reverse_url("worker", nodename))
            if self.get_argument("partial", None):  # the tables alone, for the page's auto-refresh
                self.write(self.render_string("sentinel_tables.html", **tables))
                return
            self.render("sentinel.html", tables=tables, stamp=time.strftime("%H:%M:%S UTC", time.gmtime(data["time"])),
                        api_url=self.reverse_url("sentinel-api"), partial_url=self.reverse_url("sentinel") + "?partial=1",
                        autorefresh=1 if self.application.options.auto_refresh else 0,
                        refresh_seconds=REFRESH_SECONDS)

    class SentinelApi(BaseHandler):
        @web.authenticated
        async def get(self):
            data = await self.application.io_loop.run_in_executor(None, page_data, get_config(), self.capp)
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(data, default=str))

    prefix = f"/{url_prefix.strip('/')}" if url_prefix else ""
    return [web.url(rf"{prefix}/sentinel", SentinelView, name="sentinel"), (rf"{prefix}/sentinel/", SentinelView),
            web.url(rf"{prefix}/sentinel/api", SentinelApi, name="sentinel-api"), (rf"{prefix}/sentinel/api/", SentinelApi)]


def build_flower(capp, argv: list[str]):
    """Flower's application configured from ``argv`` (Flower's options) and FLOWER_* variables, plus our pages."""
    apply_env_options()
    apply_options("sentinel flower", argv)
    extract_settings()
    setup_logging()
    flower_app = Flower(capp=capp, options=options, **settings,
                        template_loader=SentinelTemplates(settings["template_path"]))
    # add_handlers puts these before Flower's catch-all 404 rule
    flower_app.add_handlers(r".*$", sentinel_handlers(options.url_prefix or ""))
    return flower_app
