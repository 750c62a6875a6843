"""Routing: a task's type names its queue.

A task declares ``task_type`` (a class attribute; per call, ``job_type=`` in ``apply_async`` or
``send_task`` — Celery itself reserves the ``task_type`` keyword there); the router
sends it to the queue of that type, and refuses at send time a type the cluster does not run.
Tasks without a type keep Celery's default routing. Placement on a chosen worker's direct queue
(load balancing) plugs in here as ``placement``.

This module also names Sentinel's queues: a type's queue is the type's name; each worker also
consumes its *direct queue* ``sentinel.direct.<worker id>``; under the ``master_worker`` and
``hierarchical`` coordination patterns typed tasks wait in *coordinator queues*
``sentinel.coord.<type>`` until the leader assigns them. A message moved off its queue carries its
*home* (``sentinel_home``): where it goes back to if it has to leave a worker.
"""
from __future__ import annotations

from typing import Any, Callable

from kombu import Queue

from sentinel_celery.config import Config

DIRECT_QUEUE_PREFIX = "sentinel.direct."
COORDINATOR_QUEUE_PREFIX = "sentinel.coord."
#: message property naming the queue a message returns to when it leaves a direct queue
HOME_PROPERTY = "sentinel_home"


def direct_queue_name(worker_id: str) -> str:
    """The queue only ``worker_id`` consumes."""
    return f"{DIRECT_QUEUE_PREFIX}{worker_id}"


def direct_queue(worker_id: str) -> Queue:
    name = direct_queue_name(worker_id)
    return Queue(name, routing_key=name)


def coordinator_queue_name(task_type: str) -> str:
    """The queue typed tasks wait in until a coordinator assigns them (master_worker, hierarchical)."""
    return f"{COORDINATOR_QUEUE_PREFIX}{task_type}"


def coordinator_route(task_type: str) -> dict:
    name = coordinator_queue_name(task_type)
    return {"queue": Queue(name, routing_key=name), "routing_key": name, HOME_PROPERTY: name}


def default_worker_queues(cfg: Config, app) -> list[str]:
    """Queues a worker started without ``-Q`` consumes: its supported types and the default queue."""
    return [*cfg.supported_task_types, app.conf.task_default_queue or "celery"]


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
