"""``SentinelWorkerStep``: the bootstep that starts and stops a worker's :class:`WorkerRuntime`.

It runs in the worker's main process once the pool is up: registers the worker and starts its
heartbeat; on a warm shutdown it marks the worker ``stopping`` but keeps beating while the pool
finishes (so finishing tasks never look like a dead worker); it deregisters at ``shutdown``.
"""
from __future__ import annotations

import logging

from celery import bootsteps
from celery.platforms import EX_FAILURE

from sentinel_celery.config import get_config
from sentinel_celery.state.registry import WorkerIdInUse
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


class SentinelWorkerStep(bootsteps.StartStopStep):
    """Registers the worker and keeps its heartbeat; see the module docstring."""

    label = "Sentinel"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, **kwargs):
        self.runtime: WorkerRuntime | None = None
        super().__init__(worker, **kwargs)

    def start(self, worker):
        cfg = get_config()
        if cfg.missing_worker_file:
            logger.warning("sentinel: WORKER_ID=%s but %s does not exist; this worker uses shared.json and "
                           "the environment only", cfg.worker_id, cfg.missing_worker_file)
        self.runtime = WorkerRuntime(worker, cfg)
        try:
            self.runtime.start()
        except WorkerIdInUse as exc:
            # logged once here; an int exit code, since Celery would log a message code again (stderr)
            logger.critical("sentinel: %s", exc)
            raise SystemExit(EX_FAILURE) from None

    def stop(self, worker):
        # Warm shutdown: keep beating while the pool finishes; deregister on worker_shutdown.
        if self.runtime:
            self.runtime.mark_stopping()

    def terminate(self, worker):
        self.stop(worker)

    def shutdown(self, worker):
        if self.runtime:
            self.runtime.stop()
