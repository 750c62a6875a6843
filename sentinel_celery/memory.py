"""``sentinel_celery.memory``: the shared memory's public API (the store itself is state/memory.py).

    from sentinel_celery import memory
    memory.set("build:cache-url", "s3://...", namespace="config")
    memory.get("build:cache-url", namespace="config")
"""
from __future__ import annotations

from sentinel_celery.state.memory import (
                                          DEFAULT_NAMESPACE,
                                          Entry,
                                          SharedMemory,
                                          StaleWrite,
                                          VersionRequired,
                                          delete,
                                          entries,
                                          entry,
                                          get,
                                          list,
                                          set,
                                          shared_memory,
                                          update,
                                          watch,
)

__all__ = ["DEFAULT_NAMESPACE", "Entry", "SharedMemory", "StaleWrite", "VersionRequired", "delete", "entries",
           "entry", "get", "list", "set", "shared_memory", "update", "watch"]
