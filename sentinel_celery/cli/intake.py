"""``sentinel intake serve``: GitHub webhooks (or polling) start jobs, in the foreground.

The same service runs as a worker duty with ``github.intake.inWorkers`` (intake/duty.py).
"""
from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from sentinel_celery.cli.common import celery_app, emit, fail, handles_errors, iso_time, json_option, table
from sentinel_celery.config import get_config
from sentinel_celery.github.client import GitHubError
from sentinel_celery.intake.duty import IntakeService
from sentinel_celery.intake.intake import recent
from sentinel_celery.state.connection import get_redis


@click.group("intake", help="GitHub as a way in: webhooks and issue commands start builds, tests and deploys.")
def intake_group() -> None:
    pass


@intake_group.command("serve", help="Receive GitHub webhooks on --port (or poll GitHub with --mode poll) and start "
                                    "the jobs github.intake.rules name (foreground; Ctrl-C stops).")
@click.option("--host", default=None, help="Address to bind. Default: github.intake.host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: github.intake.port (8790); 0 picks a free one.")
@click.option("--mode", type=click.Choice(["webhook", "poll"]), default=None,
              help="Default: github.intake.mode.")
@click.option("--app", "app_path", default=None, help="module:attribute of the Celery app to send jobs with "
                                                      "(default: one built from the configuration).")
@handles_errors
def intake_serve(host, port, mode, app_path):
    cfg = get_config()
    get_redis(cfg.redis_url).ping()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        service = IntakeService(celery_app(app_path), cfg, mode=mode, host=host, port=port).start()
    except (ValueError, OSError, GitHubError) as exc:
        fail(str(exc), code=1)
    if service.url:
        click.echo(f"sentinel intake: receiving GitHub webhooks at {service.url}")
    else:
        click.echo(f"sentinel intake: polling {cfg.get('github.owner')}/{cfg.get('github.repo')} every "
                   f"{cfg.get('github.intake.pollIntervalMs')} ms")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    service.stop()


@intake_group.command("status", help="What the intake did lately: counts per outcome and the latest events.")
@click.option("--limit", default=20, show_default=True, type=int)
@json_option
@handles_errors
def intake_status(limit, as_json):
    cfg = get_config()
    client = get_redis(cfg.redis_url)
    counts = {k: int(v) for k, v in client.hgetall(f"{cfg.namespace}intake:stats").items()}
    data = {"mode": cfg.get("github.intake.mode"), "counts": counts,
            "recent": recent(client, cfg.namespace, limit)}

    def render(d):
        head = f"intake mode {d['mode']}: " + (", ".join(f"{v} {k}" for k, v in sorted(d["counts"].items()))
                                              or "nothing received yet")
        rows = [{"at": iso_time(r["at"]), "event": r["event"], "result": r["result"], "reason": r["reason"],
                 "tasks": ", ".join(r["task_ids"])} for r in d["recent"]]
        return head + ("\n" + table(rows, [("at", "AT"), ("event", "EVENT"), ("result", "RESULT"),
                                            ("reason", "WHY"), ("tasks", "TASKS")]) if rows else "")
    emit(data, as_json, render)
