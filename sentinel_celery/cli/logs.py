"""``sentinel logs``: worker and task logs from every host (the Redis log stream)."""
from __future__ import annotations

import json
import signal
import threading

import click

from sentinel_celery.cli.common import fail, handles_errors, json_option, json_ready
from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.logs import LogQuery, format_entry, parse_since, query, since_ms, to_json_line
from sentinel_celery.state.logs import follow as follow_stream


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
    cfg = get_config()
    client = get_redis(cfg.redis_url)
    try:
        since_at = since_ms(client, parse_since(since)) if since else None
    except ValueError as exc:
        fail(str(exc), code=2)
    if since and since_at is None:
        click.echo(f"sentinel: --since {since} reaches back before 1970; showing records of any age", err=True)
    q = LogQuery(worker=worker_id, level=level.upper() if level else None, since_ms=since_at, search=search,
                 task_id=task_id)
    entries = query(client, cfg.namespace, q, limit=limit)
    if not follow:
        if as_json:
            click.echo(json.dumps(json_ready(entries), indent=2, sort_keys=True))
        elif entries:
            click.echo("\n".join(format_entry(e) for e in entries))
        else:
            click.echo("no log records match", err=True)
        return
    for e in entries:
        click.echo(to_json_line(json_ready(e)) if as_json else format_entry(e))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    start = entries[-1]["id"] if entries else "$"
    try:
        for e in follow_stream(client, cfg.namespace, q, start_id=start, stop=stop):
            click.echo(to_json_line(json_ready(e)) if as_json else format_entry(e))
    except KeyboardInterrupt:
        pass
