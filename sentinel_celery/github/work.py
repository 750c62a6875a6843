"""What a flush does: :class:`Work` items (one GitHub object each) and the context they run in.

Each mirror family (workers.py, tasks.py, dashboard.py, alertissues.py) turns the folded outbox
and the truth in Redis into work items; the mirror runs them by priority within the budget. An
item ``covers`` pending entries: they leave the pending table only when every item covering them
succeeded, so a partial failure is simply done again (each item is idempotent: it compares
digests before writing).

Owns no Redis keys.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from sentinel_celery.github.client import GitHubClient
from sentinel_celery.github.issues import IssueOps
from sentinel_celery.github.state import MirrorState, Pending

URGENT, FINAL, UPDATE, BACKGROUND = 0, 1, 2, 3


@dataclass
class Work:
    priority: int
    name: str
    run: Callable[[], None] | None
    covers: list[Pending] = field(default_factory=list)
    on_success: Callable[[], None] | None = None


@dataclass
class Context:
    cfg: object
    client: GitHubClient | None
    state: MirrorState
    ops: IssueOps | None
    cold: bool
    now: float = field(default_factory=time.time)

    def mirror_opt(self, name: str):
        return self.cfg.get(f"github.mirror.{name}")
