"""``sentinel demo``: the whole product on one machine (ops/demo.py)."""
from __future__ import annotations

import click

from sentinel_celery.ops.demo import DemoFailed, run_demo


@click.command("demo", help="The one-command demo: workers, monitor, Flower, the local GitHub API, "
                            "build → test → deploy chains, and a worker killed mid-task.")
@click.option("--redis-url", envvar="REDIS_URL", default="redis://127.0.0.1:6379/0", show_default=True,
              help="Used if it answers; otherwise an embedded Redis is started.")
@click.option("--broker", envvar="SENTINEL_BROKER_URL", default="",
              help="The Celery broker, e.g. amqp://guest:guest@127.0.0.1:5672// for RabbitMQ "
                   "[default: the Redis above].")
@click.option("--keep-running", is_flag=True, help="Leave everything up until Ctrl-C.")
@click.option("--no-kill", is_flag=True, help="Do not kill a worker (no failover).")
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.option("--timeout", type=float, default=240, show_default=True, help="Give up after this many seconds.")
def demo_command(redis_url, broker, keep_running, no_kill, no_flower, timeout):
    try:
        run_demo(redis_url, broker_url=broker, keep_running=keep_running, no_kill=no_kill, no_flower=no_flower, timeout=timeout,
                 echo=click.echo)
    except DemoFailed as exc:
        raise click.ClickException(str(exc)) from None
