"""Routing: a task's type names its queue.

A task declares ``task_type`` (a class attribute; per call, ``job_type=`` in ``apply_async`` or
``send_task`` — Celery itself reserves the ``task_type`` keyword there); the router
sends it to the queue of that type, and refuses at send time a type the cluster does not run.
Tasks without a type keep Celery's default routing. Placement on a chosen worker's direct queue
(load balancing) plugs in here as ``placement``.
"""
from __future__ import annotations

from typing import Any, Callable

from .config import Config


class UnknownTaskType(ValueError):
    def __init__(self, task_name: str, task_type: str, known: list[str]):
        super().__init__(f"task '{task_name}' has type '{task_type}', which is not configured; "
                         f"configured task types (distributed.taskTypes): {', '.join(known)}")


def task_type_of(app, name: str, options: dict, task=None) -> str | None:
    if options.get("job_type"):
        return options["job_type"]
    if task is None or isinstance(task, str):
        task = app.tasks.get(name)
    return getattr(task, "task_type", None)


class TaskRouter:
    """A Celery router (``task_routes`` entry)."""

    def __init__(self, app, cfg: Config, placement: Callable[..., dict | None] | None = None):
        self.app = app
        self.cfg = cfg
        self.placement = placement

    def __call__(self, name: str, args: Any, kwargs: Any, options: dict, task=None, **kw) -> dict | None:
        task_type = task_type_of(self.app, name, options, task)
        if task_type is None:
            return None
        known = self.cfg.task_types
        if task_type not in known:
            raise UnknownTaskType(name, task_type, known)
        if self.placement is not None:
            placed = self.placement(name, task_type, args, kwargs, options)
            if placed:
                return placed
        return {"queue": task_type, "routing_key": task_type}
