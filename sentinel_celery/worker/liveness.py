"""Whether the process of an earlier incarnation of this worker id is gone, from what the registry knows of it.

A worker restarted under the same ``WORKER_ID`` (a Kubernetes container restart keeps the pod name, a
supervisor's restart loop keeps its arguments) may register before its earlier incarnation's last beat is
older than the stale threshold. If that incarnation ran on this host and no process with its pid is alive
that was started before it registered, it is dead, and the new one may take over the id at once.

Redis keys: none.
"""
from __future__ import annotations

import os

import psutil

#: slack between a process's start and its registration, for clock granularity
_START_SLACK_S = 1.0


def incarnation_gone(hostname: str, pid: int, started_ms: int, *, this_host: str) -> bool:
    """True only when sure: same host, and its pid is ours, unused, a zombie, or reused by a later process."""
    if not pid or not hostname or hostname != this_host:
        return False
    if pid == os.getpid():
        return True  # a container restart: the pid it had is this process's now
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    return bool(started_ms) and created > started_ms / 1000.0 + _START_SLACK_S
