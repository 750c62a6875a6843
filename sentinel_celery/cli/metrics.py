"""``sentinel metrics serve``: /metrics, /health, /cluster/health and /cluster/metrics in the foreground."""
from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from sentinel_celery.cli.common import PORT, fail, handles_errors
from sentinel_celery.cluster.alerts import AlertEvaluator
from sentinel_celery.config import get_config
from sentinel_celery.ops.metrics import serve_metrics
from sentinel_celery.state.connection import get_redis


@click.group("metrics", help="The Prometheus / JSON metrics endpoint.")
def metrics_group() -> None:
    pass


@metrics_group.command("serve", help="Serve /metrics, /health, /cluster/health and /cluster/metrics (foreground), "
                                      "and evaluate the alert rules every monitoring.alerts.intervalMs.")
@click.option("--host", default=None, help="Default: monitoring.metricsHost (127.0.0.1).")
@click.option("--port", type=PORT, default=None, help="Default: monitoring.metricsPort (9808); 0 picks a free one.")
@click.option("--alerts/--no-alerts", default=True, show_default=True,
              help="Evaluate alerts here too (safe with several evaluators: each alert is announced once).")
@handles_errors
def metrics_serve(host, port, alerts):
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
