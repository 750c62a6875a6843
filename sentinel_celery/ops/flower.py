"""Flower with a Sentinel page, for ``sentinel flower`` (``celery -A sentinel_celery flower`` also works, unchanged).

``sentinel flower`` builds Flower's own tornado application exactly as ``celery flower`` does (same
options, environment variables ``FLOWER_*``, and auth), then adds two handlers that subclass Flower's
``BaseHandler`` and are guarded by ``@web.authenticated``, so Flower's ``--basic-auth`` / OAuth
apply to them unchanged:

  /sentinel        HTML: workers with state and load, queues, held leases, firing alerts,
                   failover history, GitHub mirror status
  /sentinel/api    the same data as JSON

Flower's task pages need task events from the workers: start workers with ``-E``, or set
``monitoring.taskEvents`` (costs throughput; see docs/operations.md). The Sentinel page reads Redis
and needs no events.

The command itself is cli/flower.py.

Redis keys: none of its own (it reads what cluster/snapshot.py reads).
"""
from __future__ import annotations

import json
import time

from flower.app import Flower
from flower.command import apply_env_options, apply_options, extract_settings, setup_logging
from flower.urls import settings
from flower.views import BaseHandler
from tornado import web
from tornado.escape import xhtml_escape as esc
from tornado.options import options

from sentinel_celery.cluster.snapshot import collect_snapshot, failover_history
from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import RedisLeaseBackend


def page_data(cfg, app=None) -> dict:
    client = get_redis(cfg.redis_url)
    snap = collect_snapshot(cfg, app, client)
    return {"time": snap["time"], "workers": snap["workers"], "queues": snap["queues"],
            "leases": RedisLeaseBackend(client, cfg.namespace).held(), "alerts": snap["alerts"],
            "failover": failover_history(cfg, client, limit=20), "github": snap["github"]}


def _table(rows: list[dict], columns: list[tuple[str, str]], empty: str) -> str:
    if not rows:
        return f"<p class='empty'>{esc(empty)}</p>"
    head = "".join(f"<th>{esc(h)}</th>" for _, h in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc('' if r.get(k) is None else str(r.get(k)))}</td>"
                                    for k, _ in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(data: dict, flower_root: str = "/") -> str:
    workers = [{**w, "load": f"{w['active']}/{w['capacity']}", "util": f"{w['utilization']:.0%}",
                "queues": ",".join(w["queues"]), "beat": f"{w['age_ms'] / 1000:.1f}s ago"} for w in data["workers"]]
    queues = [{"queue": q, **v} for q, v in sorted(data["queues"].items())]
    leases = [{**h, "left": f"{h['ttl_ms'] / 1000:.1f}s"} for h in data["leases"]]
    failover = data["failover"]
    github = data["github"]
    sections = [
        ("Workers", _table(workers, [("id", "Worker"), ("status", "State"), ("load", "Load"), ("util", "Utilization"),
                                     ("queues", "Queues"), ("region", "Region"), ("hostname", "Host"),
                                     ("incarnation", "Incarnation"), ("beat", "Last heartbeat")],
                           "no workers registered")),
        ("Queues", _table(queues, [("queue", "Queue"), ("length", "Waiting"),
                                   ("oldest_age_seconds", "Oldest (s)")], "no queues")),
        ("Held leases", _table(leases, [("name", "Lease"), ("worker", "Worker"), ("token", "Fencing token"),
                                        ("task_id", "Task"), ("left", "Expires in")], "no leases held")),
        ("Alerts firing", _table(data["alerts"], [("name", "Alert"), ("severity", "Severity"),
                                                  ("summary", "Summary")], "no alerts firing")),
        ("Failover history", _table(failover, [(k, k) for k in sorted({k for e in failover for k in e})][:8],
                                    "no failovers recorded") if failover is not None
         else "<p class='empty'>failover module not installed</p>"),
        ("GitHub mirror", _table([{"field": k, "value": json.dumps(v) if isinstance(v, dict) else v}
                                  for k, v in github.items()], [("field", "Field"), ("value", "Value")], "")
         if github else "<p class='empty'>no mirror status yet (the mirror is not running or not configured)</p>"),
    ]
    body = "".join(f"<section><h2>{esc(title)}</h2>{html}</section>" for title, html in sections)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data["time"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sentinel · Flower</title>
<meta http-equiv="refresh" content="10">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: .5rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .3rem .7rem; text-align: left; font-size: .9rem; }}
th {{ background: #f4f4f4; }} .empty {{ color: #777; }} h2 {{ font-size: 1.1rem; margin-top: 1.4rem; }}
</style></head>
<body><h1>Task Sentinel</h1>
<p><a href="{esc(flower_root)}">← Flower</a> · <a href="sentinel/api">JSON</a> · as of {esc(stamp)}</p>
{body}
</body></html>"""


def sentinel_handlers(url_prefix: str = "") -> list:
    class SentinelView(BaseHandler):
        @web.authenticated
        async def get(self):
            data = await self.application.io_loop.run_in_executor(None, page_data, get_config(), self.capp)
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.write(render_page(data, flower_root=f"/{url_prefix.strip('/')}/" if url_prefix else "/"))

    class SentinelApi(BaseHandler):
        @web.authenticated
        async def get(self):
            data = await self.application.io_loop.run_in_executor(None, page_data, get_config(), self.capp)
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(data, default=str))

    prefix = f"/{url_prefix.strip('/')}" if url_prefix else ""
    return [(rf"{prefix}/sentinel/?", SentinelView), (rf"{prefix}/sentinel/api/?", SentinelApi)]


def build_flower(capp, argv: list[str]):
    """Flower's application configured from ``argv`` (Flower's options) and FLOWER_* variables, plus our pages."""
    apply_env_options()
    apply_options("sentinel flower", argv)
    extract_settings()
    setup_logging()
    flower_app = Flower(capp=capp, options=options, **settings)
    # add_handlers puts these before Flower's catch-all 404 rule
    flower_app.add_handlers(r".*$", sentinel_handlers(options.url_prefix or ""))
    return flower_app
