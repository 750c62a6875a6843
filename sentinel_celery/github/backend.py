"""``github+redis://`` — Celery's Redis result backend that also tells the GitHub mirror about linked tasks.

Results live in Redis exactly as with ``redis://`` (this is a subclass of Celery's
``RedisBackend``). For a *linked* task — kwargs ``github_issue`` and/or ``sha`` — every state it
stores (STARTED, RETRY, SUCCESS, FAILURE, REVOKED, and a failure stored for it by failover when a
worker was lost) is also appended to the outbox, in the same Redis pipeline as the result itself
(``SET`` + ``PUBLISH`` + ``XADD``: no extra round trip). Plain tasks cost nothing more than a dict
lookup. Registered as the ``github`` alias through the ``celery.result_backends`` entry point
(``sentinel`` is taken: Celery uses it for Redis Sentinel); on a Redis Sentinel deployment the same
events ride on Celery's ``SentinelBackend`` as ``githubsentinel+sentinel://``.

Also here, the two other appenders of ``task`` events:

* the client's "queued" event, from ``before_task_publish``, for linked tasks only;
* "started" from ``task_prerun`` for linked tasks that do not track STARTED themselves (the
  built-in jobs do: ``track_started=True``; turning it on for every task would cost plain tasks a
  result write each);
* "holds lease" / "released lease" from :class:`SentinelTask` (``task.lease_hooks``), for linked
  tasks only, which is what the ``sentinel:locked`` label shows.

Owns no Redis keys (appends to ``github:outbox``, see outbox.py).
"""
from __future__ import annotations

import json
import logging
import threading
import time

from celery import current_app, states
from celery.backends.redis import RedisBackend, SentinelBackend

from sentinel_celery.config import get_config
from sentinel_celery.github.client import configured
from sentinel_celery.state import outbox

logger = logging.getLogger(__name__)

LINK_KWARGS = ("github_issue", "sha")
FINAL_STATES = frozenset({states.SUCCESS, states.FAILURE, states.REVOKED})
OUTPUT_MAX = 4000
ERROR_MAX = 4000


def link_of(kwargs) -> dict | None:
    """``{"github_issue": n, "sha": s}`` for a linked task's kwargs, else None."""
    if not kwargs or not isinstance(kwargs, dict):
        return None
    issue, sha = kwargs.get("github_issue"), kwargs.get("sha")
    if issue in (None, "", 0) and not sha:
        return None
    return {"github_issue": issue, "sha": sha}


def _now_ms() -> int:
    return int(time.time() * 1000)


_started: dict[str, float] = {}  # task id -> monotonic start, in the process that runs it


def task_event(app, task_id: str, result, state: str, traceback, request, link: dict) -> dict:
    name = getattr(request, "task", None) if request is not None else None
    task = app.tasks.get(name) if name else None
    delivery = (getattr(request, "delivery_info", None) or {}) if request is not None else {}
    retries = int(getattr(request, "retries", 0) or 0) if request is not None else 0
    cfg = get_config()
    event = {"state": state, **{k: v for k, v in link.items() if v not in (None, "")}, "at": _now_ms(),
             "attempts": retries + 1}
    if name:
        event["task"] = name
    ttype = getattr(task, "task_type", None) or delivery.get("routing_key")
    if ttype:
        event["task_type"] = ttype
    if delivery.get("routing_key"):
        event["queue"] = delivery["routing_key"]
    if cfg.worker["workerId"]:
        event["worker"] = cfg.worker_id
    if state == states.STARTED:
        _started[task_id] = time.monotonic()
        event["started_at"] = event["at"]
    elif state in FINAL_STATES or state == states.RETRY:
        began = _started.pop(task_id, None) if state in FINAL_STATES else _started.get(task_id)
        if began is not None:
            event["duration"] = round(time.monotonic() - began, 3)
    if state == states.SUCCESS:
        if isinstance(result, dict):
            for key in ("exit_code", "duration", "lease_token"):
                if result.get(key) is not None:
                    event[key] = result[key]
            if result.get("output_tail"):
                event["output_tail"] = str(result["output_tail"])[-OUTPUT_MAX:]
        elif result is not None:
            event["result"] = repr(result)[:500]
        event["error"] = None
    elif isinstance(result, dict) and "exc_type" in result:  # an exception, as the backend encodes it
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            message = message[0] if len(message) == 1 else " ".join(str(m) for m in message)
        event["error"] = str(message or "")[-ERROR_MAX:] or str(result["exc_type"])
        event["error_type"] = str(result["exc_type"])
    elif isinstance(result, BaseException):
        event["error"] = str(result)[-ERROR_MAX:] or type(result).__name__
        event["error_type"] = type(result).__name__
        for key in ("exit_code", "output_tail"):
            value = getattr(result, key, None)
            if value is not None:
                event[key] = value if key != "output_tail" else str(value)[-OUTPUT_MAX:]
    if state in FINAL_STATES or state in (states.STARTED, states.RETRY):
        event["locked"] = None  # a lease is taken after STARTED is stored (see on_lease)
    return event


class GitHubEvents:
    """Redis results, plus an outbox event per state change of a linked task (same pipeline)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._local = threading.local()

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        link = link_of(getattr(request, "kwargs", None)) if request is not None else None
        if link is None and (request is None or getattr(request, "kwargs", None) is None):
            link = self._known_link(task_id)  # stored without a request (failover's dead letters)
        if link is not None:
            try:
                self._local.event = (task_id, task_event(self.app, task_id, result, state, traceback, request, link),
                                     state in FINAL_STATES)
            except Exception:  # the result must be stored even if the event cannot be built
                logger.exception("sentinel: could not build the GitHub event of task %s", task_id)
        try:
            return super()._store_result(task_id, result, state, traceback, request=request, **kwargs)
        finally:
            self._local.event = None

    def _known_link(self, task_id: str) -> dict | None:
        try:
            ns = get_config().namespace
            raw = self.client.hget(f"{ns}github:tasks", task_id)
            if raw:
                d = json.loads(raw)
                return {"github_issue": d.get("github_issue"), "sha": d.get("sha")}
            if self.client.hexists(f"{ns}github:pending", f"task|{task_id}"):
                return {}
        except Exception:
            pass
        return None

    def _set(self, key, value, expires=None):
        pending = getattr(self._local, "event", None)
        if pending is None:
            return super()._set(key, value, expires)
        self._local.event = None
        task_id, event, final = pending
        if expires is None:
            expires = self.expires
        with self.client.pipeline() as pipe:
            if expires:
                pipe.setex(key, expires, value)
            else:
                pipe.set(key, value)
            pipe.publish(key, value)
            outbox.add_to_pipeline(pipe, "task", task_id, event, final=final)
            results = pipe.execute(raise_on_error=False)
        for res in results[:2]:
            if isinstance(res, Exception):
                raise res
        if isinstance(results[2], Exception):
            outbox.errors += 1
            logger.warning("sentinel: could not append the GitHub event of task %s: %s", task_id, results[2])


class GitHubRedisBackend(GitHubEvents, RedisBackend):
    """``github+redis://``: Celery's Redis backend with the GitHub events."""


class GitHubSentinelBackend(GitHubEvents, SentinelBackend):
    """``githubsentinel+sentinel://``: Celery's Redis Sentinel backend with the GitHub events."""


# -- the other task events -----------------------------------------------------------------------
def on_before_publish(sender=None, body=None, headers=None, routing_key=None, **kwargs) -> None:
    """Client side: a linked task was sent — its issue shows ``sentinel:queued`` (plain tasks: one lookup)."""
    try:
        task_kwargs = body[1] if isinstance(body, (tuple, list)) and len(body) > 1 else (body or {}).get("kwargs")
    except (AttributeError, TypeError):
        return
    link = link_of(task_kwargs)
    if link is None or not headers or not headers.get("id"):
        return
    cfg = get_config()
    if not configured(cfg):
        return
    event = {"state": "QUEUED", **{k: v for k, v in link.items() if v not in (None, "")}, "task": sender,
             "at": _now_ms(), "attempts": int(headers.get("retries") or 0) + 1, "queue": routing_key}
    try:
        ttype = getattr(current_app.tasks.get(sender), "task_type", None)
        if ttype:
            event["task_type"] = ttype
    except Exception:
        pass
    outbox.append("task", headers["id"], event, cfg=cfg)


def on_task_prerun(sender=None, task_id=None, task=None, kwargs=None, **_) -> None:
    """Pool child: "started" for a linked task whose STARTED state the backend does not record."""
    if task is None or task.track_started or task_id is None:
        return
    link = link_of(kwargs)
    if link is None:
        return
    outbox.append("task", task_id, task_event(task.app, task_id, None, states.STARTED, None, task.request, link))


def on_lease(task, lease, held: bool) -> None:
    """``SentinelTask`` lease hook: a linked task took or gave back its lease."""
    if not held:
        return  # the final state (or the next STARTED) clears it; one event saved per task
    link = link_of(getattr(task.request, "kwargs", None))
    if link is None or not task.request.id:
        return
    outbox.append("task", task.request.id, {"locked": lease.name, "lease_token": lease.token})
