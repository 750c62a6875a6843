"""``SentinelWorkerStep``: the bootstep that starts and stops a worker's :class:`WorkerRuntime`.

It runs in the worker's main process once the pool is up: registers the worker and starts its
heartbeat; on a warm shutdown it marks the worker ``stopping`` but keeps beating while the pool
finishes (so finishing tasks never look like a dead worker); it deregisters at ``shutdown``.

A worker started while Redis does not answer waits for it, as Celery waits for its broker: one
warning line each attempt, 2 s more between attempts (at most 30 s), up to
``broker_connection_max_retries`` attempts (0 or None: no limit; none if
``broker_connection_retry_on_startup`` is off), then one line and exit code 1.
"""
from __future__ import annotations

import logging
import time

import redis
from celery import bootsteps
from celery.platforms import EX_FAILURE

from sentinel_celery.config import get_config, redact_url
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
            self._start_when_redis_answers(worker.app.conf, cfg.redis_url)
        except WorkerIdInUse as exc:
            # logged once here; an int exit code, since Celery would log a message code again (stderr)
            logger.critical("sentinel: %s", exc)
            raise SystemExit(EX_FAILURE) from None

    def _start_when_redis_answers(self, conf, url: str) -> None:
        retry = conf.broker_connection_retry_on_startup
        retry = conf.broker_connection_retry if retry is None else retry
        limit = conf.broker_connection_max_retries or 0  # 0 / None: no limit, as for Celery's broker
        attempt = 0
        while True:
            try:
                self.runtime.start()
                if attempt:
                    logger.info("sentinel: Redis at %s answers; starting", redact_url(url))
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                attempt += 1
                if not retry or (limit and attempt > limit):
                    logger.critical("sentinel: Redis at %s does not answer (%s); the worker stops after %d "
                                    "attempt(s)", redact_url(url), exc, attempt)
                    raise SystemExit(EX_FAILURE) from None
                delay = min(2 * attempt, 30)
                logger.warning("sentinel: Redis at %s does not answer (%s); retrying in %d s (attempt %d of %s)",
                               redact_url(url), exc, delay, attempt, limit or "unlimited")
                time.sleep(delay)

    def stop(self, worker):
        # Warm shutdown: keep beating while the pool finishes; deregister on worker_shutdown.
        if self.runtime:
            self.runtime.mark_stopping()

    def terminate(self, worker):
        self.stop(worker)

    def shutdown(self, worker):
        if self.runtime:
            self.runtime.stop()
