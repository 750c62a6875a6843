"""The background loop of a worker duty (failover monitor, GitHub mirror, coordination, alerts).

Each duty runs in every worker's main process and acts only while it holds its leader lease; this
owns the thread's life (a ``stopping`` event the duty's loop watches, and a bounded ``stop()``) and
what one step's failure does to the loop: nothing (``run_step``).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import redis

logger = logging.getLogger(__name__)


def run_step(step: Callable[[], object], what: str) -> None:
    """One step of a duty's loop. A Redis error is a warning, anything else is logged with its
    traceback; neither ends the loop, which tries again at its next tick."""
    try:
        step()
    except redis.RedisError as exc:
        logger.warning("sentinel: %s: Redis: %s", what, exc)
    except Exception:
        logger.exception("sentinel: %s failed", what)


class DutyThread(threading.Thread):
    stop_timeout = 5.0

    def __init__(self, name: str, stopping: threading.Event | None = None):
        super().__init__(name=name, daemon=True)
        self.stopping = stopping if stopping is not None else threading.Event()

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(self.stop_timeout if timeout is None else timeout)
