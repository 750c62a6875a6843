"""``sentinel demo``: the one-command tour on a machine with only Python.

Uses ``REDIS_URL`` if it answers, else starts an embedded Redis; starts worker processes for the
build, test and deploy queues; runs a build → test → deploy chain (the deploy holds a lease on its
environment); prints what happened; stops everything it started.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click

from .embedded import ensure_redis
from .processes import start_worker, wait_for

DEMO_WORKERS = (
    # worker id, queues, concurrency, region
    ("demo-build", ["build"], 2, "eu-west"),
    ("demo-test", ["test"], 2, "us-east"),
    ("demo-deploy", ["deploy"], 1, "us-west"),
)


def _job(seconds: float, text: str) -> list[str]:
    return [sys.executable, "-c", f"import time; print({text!r}); time.sleep({seconds}); print('done')"]


@click.command("demo", help="Run the demo: embedded Redis if needed, workers, a build → test → deploy chain.")
@click.option("--redis-url", envvar="REDIS_URL", default="redis://127.0.0.1:6379/0", show_default=True)
def demo_command(redis_url: str) -> None:
    url, server = ensure_redis(redis_url)
    click.echo(f"Redis: {url}" + (" (embedded, started for this demo)" if server else ""))
    namespace = f"demo-{uuid.uuid4().hex[:6]}:"
    env = {"REDIS_URL": url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_BROKER_PREFIX": namespace}
    os.environ.update(env)
    from .config import load_config
    from .plugin import create_app
    from .bootsteps import get_registry

    cfg = load_config()
    app = create_app("sentinel_demo", config=cfg)
    log_dir = Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
    procs = []
    try:
        for worker_id, queues, concurrency, region in DEMO_WORKERS:
            procs.append(start_worker(worker_id, env={**env, "WORKER_REGION": region}, log_dir=log_dir,
                                      queues=queues, concurrency=concurrency, loglevel="WARNING"))
        registry = get_registry(cfg)
        wait_for(lambda: len(registry.online()) == len(DEMO_WORKERS), 60, message="the demo workers")
        for w in registry.online():
            click.echo(f"  worker {w.id:<12} queues={','.join(w['queues'])} region={w['metadata']['region']}")
        started = time.monotonic()
        sha = uuid.uuid4().hex[:12]
        build = app.send_task("workers.build.run", kwargs={"argv": _job(1, f"building {sha}"), "sha": sha})
        click.echo(f"build:  {build.get(timeout=120)['output_tail']!r}")
        test = app.send_task("workers.test.run", kwargs={"argv": _job(1, "running 42 tests"), "sha": sha})
        click.echo(f"test:   {test.get(timeout=120)['output_tail']!r}")
        deploy = app.send_task("workers.deploy.run", kwargs={"argv": _job(1, "deploying"), "sha": sha,
                                                            "environment": "staging"})
        result = deploy.get(timeout=120)
        click.echo(f"deploy: {result['output_tail']!r} on {result['worker']} with lease token {result['lease_token']}")
        click.echo(f"chain finished in {time.monotonic() - started:.1f}s")
    finally:
        for p in procs:
            p.stop(timeout=30)
        app.close()
        if server:
            server.stop()
    click.echo("demo finished; every process it started has stopped")
