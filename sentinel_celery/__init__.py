"""Task Sentinel for Celery: typed queues, fenced leases, a worker registry and fast failover.

The package root is the public API: ``install``/``create_app`` (plugin.py), ``SentinelTask``
(task.py), ``lease`` and its errors, the job runner (jobs.py), routing and configuration, and
``sentinel_celery.memory``. Everything else lives in one layer per folder, each importing only from
the layers below it (see the README's layout section):

    cli/ > ops/ > plugin > cluster/ > github/ > task, memory > worker/ > broker/ > state/ > routing > config
    hub/ (the local GitHub API) imports nothing else of the package.
"""
from __future__ import annotations

from sentinel_celery.config import ConfigError, get_config, load_config
from sentinel_celery.plugin import create_app, install
from sentinel_celery.routing import UnknownTaskType
from sentinel_celery.state.leases import Lease, LeaseLost, LockContended, lease
from sentinel_celery.task import SentinelTask
from sentinel_celery.version import __version__

__all__ = ["app", "install", "create_app", "SentinelTask", "lease", "Lease", "LeaseLost", "LockContended",
           "UnknownTaskType", "ConfigError", "get_config", "load_config", "__version__"]

_app = None


def __getattr__(name):
    # The ready app is built on first use, so importing the package (e.g. for the CLI) does not
    # load the configuration of a worker.
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = create_app("sentinel_celery")
        return _app
    raise AttributeError(f"module 'sentinel_celery' has no attribute {name!r}")
