"""Task Sentinel for Celery: typed queues, fenced leases, a worker registry and fast failover.

Public surface only; each concern lives in its own module:
config, plugin (install), routing, leases, registry, bootsteps, task, jobs.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .plugin import create_app, install  # noqa: E402
from .config import ConfigError, get_config, load_config  # noqa: E402
from .leases import Lease, LeaseLost, LockContended, lease  # noqa: E402
from .routing import UnknownTaskType  # noqa: E402
from .task import SentinelTask  # noqa: E402

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
