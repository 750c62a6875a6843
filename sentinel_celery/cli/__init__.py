"""The ``sentinel`` command line (also ``celery -A app sentinel ...``): one module per command group.

Every command prints a table for people or JSON with ``--json``, and exits non-zero with one clear
line when Redis or the configuration is not usable (common.py).

This layer may import every other layer; nothing imports it.
"""
from __future__ import annotations

import click

from sentinel_celery.cli.alerts import alerts_group
from sentinel_celery.cli.autoscale import autoscale_group
from sentinel_celery.cli.cluster import cluster
from sentinel_celery.cli.config import config
from sentinel_celery.cli.demo import demo_command
from sentinel_celery.cli.failover import failover_group, monitor_command
from sentinel_celery.cli.flower import flower_command
from sentinel_celery.cli.github import github_group, mirror_command
from sentinel_celery.cli.hub import hub_command
from sentinel_celery.cli.intake import intake_group
from sentinel_celery.cli.locks import locks
from sentinel_celery.cli.logs import logs_command
from sentinel_celery.cli.memory import memory_group
from sentinel_celery.cli.metrics import metrics_group
from sentinel_celery.cli.workers import worker, workers

COMMANDS = (config, workers, worker, locks, failover_group, monitor_command, cluster, logs_command, metrics_group,
            alerts_group, github_group, mirror_command, memory_group, autoscale_group, flower_command, hub_command,
            intake_group, demo_command)


@click.group(name="sentinel", help="Task Sentinel for Celery: workers, leases, failover and the GitHub mirror.")
@click.version_option(package_name="sentinel-celery")
def main() -> None:
    pass


@click.group(name="sentinel", help="Task Sentinel commands (same as the `sentinel` console script).")
def celery_command() -> None:
    pass


for _command in COMMANDS:
    main.add_command(_command)
    celery_command.add_command(_command)
