"""``sentinel flower``: Flower with the Sentinel tab (ops/flower.py)."""
from __future__ import annotations

import signal
import sys

import click
from celery.app.utils import find_app

from sentinel_celery.cli.common import PORT, handles_errors
from sentinel_celery.ops.flower import build_flower


@click.command("flower", context_settings={"ignore_unknown_options": True},
               help="Flower plus a Sentinel tab (/sentinel). Other Flower options (e.g. --url_prefix=...) pass through.")
@click.option("-A", "--app", "app_name", default="sentinel_celery", show_default=True, help="The Celery app.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=PORT, default=5555, show_default=True)
@click.option("--basic-auth", multiple=True, help="user:password (repeatable); requests without it get 401.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@handles_errors
def flower_command(app_name, address, port, basic_auth, flower_args):
    capp = find_app(app_name)
    argv = [f"--address={address}", f"--port={port}", *[f"--basic_auth={a}" for a in basic_auth], *flower_args]
    flower_app = build_flower(capp, argv)
    try:
        bound = flower_app.start_http_server()
    except OSError as exc:
        click.echo(f"sentinel: cannot listen on {address}:{port}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"sentinel flower: http://{address or '127.0.0.1'}:{bound}/  (Sentinel tab: /sentinel)")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        flower_app.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        flower_app.stop()
