"""Draining a worker: it stops taking work, finishes what it holds, then warm-stops.

Nothing is lost and nothing runs twice:
  1. the registry entry is marked ``draining``: balancers and dispatchers stop choosing it;
  2. ``cancel_consumer`` for each of its queues, addressed to its nodename only: it fetches
     nothing new (the message it would have fetched stays in the queue for another worker);
  3. what waits in its direct queue goes back home (see rebalance.py);
  4. wait until it holds no task — none running, none prefetched (``inspect active/reserved``,
     addressed to it);
  5. ``shutdown`` addressed to its nodename: a warm shutdown, and nothing is running any more;
  6. wait until it deregistered, then send home anything that reached its direct queue meanwhile.

Tasks with an ETA (countdown) it holds are not waited for: they were never started, and the
broker gives them back (kombu restores unacknowledged messages when the worker's connection
closes).

Redis keys: the worker's registry entry (``state``); the broker queues it drains.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from sentinel_celery.broker.factory import broker_for
from sentinel_celery.cluster.rebalance import home_queue
from sentinel_celery.config import Config, get_config
from sentinel_celery.routing import direct_queue_name
from sentinel_celery.state.registry import DRAINING, OFFLINE, get_registry

logger = logging.getLogger(__name__)


class DrainError(RuntimeError):
    pass


@dataclass
class DrainResult:
    worker_id: str
    nodename: str
    queues: list[str] = field(default_factory=list)
    moved_home: int = 0
    finished_holding: bool = False
    stopped: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _held(app, nodename: str, timeout: float) -> int | None:
    """Tasks the worker runs or has prefetched, asked of that worker only; None if it did not answer."""
    inspect = app.control.inspect(destination=[nodename], timeout=timeout)
    active = inspect.active() or {}
    reserved = inspect.reserved() or {}
    if nodename not in active and nodename not in reserved:
        return None
    return len(active.get(nodename) or []) + len(reserved.get(nodename) or [])


def drain(app, worker_id: str, *, cfg: Config | None = None, timeout: float | None = None, poll: float = 0.5,
          shutdown: bool = True, progress: Callable[[str], None] | None = None) -> DrainResult:
    """Drain ``worker_id`` (see the module docstring). Raises :class:`DrainError` if it is not
    online or does not answer, or if it still holds tasks after ``timeout`` seconds."""
    cfg = cfg or get_config()
    timeout = timeout if timeout is not None else cfg.get("distributed.autoscale.drainTimeoutSeconds")
    say = progress or (lambda msg: logger.info("sentinel: drain %s: %s", worker_id, msg))
    started = time.monotonic()
    registry = get_registry(cfg)
    info = registry.get(worker_id)
    if info is None or info.status == OFFLINE:
        raise DrainError(f"worker '{worker_id}' is not registered or offline; nothing to drain")
    nodename = info["nodename"]
    result = DrainResult(worker_id, nodename, list(info["queues"] or []))
    broker = broker_for(app)

    registry.set_state(worker_id, DRAINING)
    say(f"marked draining; cancelling {len(result.queues)} queue(s) on {nodename}")
    answer_timeout = max(cfg.get("distributed.heartbeat.pingTimeoutMs") / 1000.0, 1.0)
    # A worker registers before its consumer (and remote control) is up: give a fresh one time to answer.
    answer_deadline = time.monotonic() + max(15.0, 10 * answer_timeout)
    for queue in result.queues:
        while not app.control.cancel_consumer(queue, destination=[nodename], reply=True, timeout=answer_timeout):
            if time.monotonic() > answer_deadline:
                raise DrainError(f"worker '{worker_id}' ({nodename}) did not answer cancel_consumer for "
                                 f"'{queue}'; it is still marked draining")

    result.moved_home += len(broker.move_all(direct_queue_name(worker_id), lambda m: home_queue(app, cfg, m)))
    say(f"stopped consuming; {result.moved_home} waiting task(s) sent back home; waiting for held tasks")

    while True:
        held = _held(app, nodename, answer_timeout)
        if held == 0:
            result.finished_holding = True
            break
        if time.monotonic() - started > timeout:
            raise DrainError(f"worker '{worker_id}' still holds {held} task(s) after {timeout:.0f}s; "
                             f"it consumes nothing new and stays draining")
        time.sleep(poll)

    if shutdown:
        say("holds nothing; warm shutdown")
        app.control.shutdown(destination=[nodename])
        deadline = time.monotonic() + max(30.0, answer_timeout * 10)
        while time.monotonic() < deadline:
            current = registry.get(worker_id)
            if current is None or current.status == OFFLINE or current["instance"] != info["instance"]:
                result.stopped = True
                break
            time.sleep(poll)
        result.moved_home += len(broker.move_all(direct_queue_name(worker_id),
                                                 lambda m: home_queue(app, cfg, m)))
    result.seconds = round(time.monotonic() - started, 3)
    say(f"done in {result.seconds:.1f}s" + ("" if result.stopped or not shutdown else " (did not deregister yet)"))
    return result
