"""The background thread of a worker duty (failover monitor, GitHub mirror, coordination).

Each duty runs in every worker's main process and acts only while it holds its leader lease; this
owns only the thread's life: a ``stopping`` event the duty's loop watches, and a bounded ``stop()``.
"""
from __future__ import annotations

import threading


class DutyThread(threading.Thread):
    stop_timeout = 5.0

    def __init__(self, name: str, stopping: threading.Event | None = None):
        super().__init__(name=name, daemon=True)
        self.stopping = stopping if stopping is not None else threading.Event()

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(self.stop_timeout if timeout is None else timeout)
