"""The GitHub mirror: leases, heartbeats, assignments, results and failovers visible in GitHub.

Nothing in a task's hot path calls GitHub. Processes append events to the outbox in Redis
(:mod:`sentinel_celery.state.outbox`); one elected writer (:mod:`.mirror`) turns them into GitHub
writes, coalesced per object and paced within GitHub's rate limits.

Modules, one concern each:

* :mod:`.client`      — PyGithub (token or GitHub App auth, ``github.apiUrl``), typed errors
* :mod:`.budget`      — write pacing and rate-limit headers
* :mod:`.render`      — neutralised Markdown for text that comes from tasks
* :mod:`.state`       — the folded outbox and what was written, in Redis
* :mod:`.issues`      — issues/comments found again by hidden marker, never duplicated
* :mod:`.workers`, :mod:`.tasks`, :mod:`.dashboard` — what each GitHub object shows
* :mod:`.mirror`      — the leader loop, flushes, reconciliation, status
* :mod:`.backend`     — the ``github+redis://`` result backend and the other task events

The commands (``sentinel github ...``, ``sentinel mirror``) are in cli/github.py.

This layer may import: task (its lease hooks), worker/, broker/, state/, routing, config.

Public surface: :func:`connect` (called by ``plugin.install``), :func:`result_backend_url`,
:func:`mirror_status` (for metrics and alerts), :func:`configured`.
"""
from __future__ import annotations

import logging
import time

from celery import signals
from celery.worker import state as worker_state

from sentinel_celery import task as task_module
from sentinel_celery.github.backend import on_before_publish, on_lease, on_task_prerun
from sentinel_celery.github.client import configured
from sentinel_celery.github.mirror import Mirror, MirrorThread, mirror_status
from sentinel_celery.redis_url import is_sentinel_url, kombu_sentinel_url, parse_sentinel_url
from sentinel_celery.state import outbox
from sentinel_celery.worker.runtime import WorkerRuntime

__all__ = ["connect", "configured", "mirror_status", "result_backend_url"]

logger = logging.getLogger(__name__)

BACKEND_ALIAS = "github"
BACKEND_CLASS = "sentinel_celery.github.backend:GitHubRedisBackend"
SENTINEL_BACKEND_ALIAS = "githubsentinel"
SENTINEL_BACKEND_CLASS = "sentinel_celery.github.backend:GitHubSentinelBackend"


def result_backend_url(cfg) -> str:
    """``github+redis://...`` when GitHub is configured, else the plain Redis URL. For
    ``redis+sentinel://``: Celery's ``sentinel://`` backend (``githubsentinel+sentinel://...``)."""
    if is_sentinel_url(cfg.redis_url):
        url = kombu_sentinel_url(parse_sentinel_url(cfg.redis_url))
        return f"{SENTINEL_BACKEND_ALIAS}+{url}" if configured(cfg) else url
    return f"{BACKEND_ALIAS}+{cfg.redis_url}" if configured(cfg) else cfg.redis_url


def connect(app, cfg) -> None:
    """Wire the mirror into ``app``: result backend alias, task events, the worker's mirror thread. Idempotent."""
    if not cfg.get("github.enabled"):
        return
    # The alias also works when the package's entry points were not reinstalled.
    overrides = dict(getattr(app.loader, "override_backends", {}) or {})
    overrides.setdefault(BACKEND_ALIAS, BACKEND_CLASS)
    overrides.setdefault(SENTINEL_BACKEND_ALIAS, SENTINEL_BACKEND_CLASS)
    app.loader.override_backends = overrides
    if not configured(cfg):
        return  # nothing to mirror: plain tasks and workers pay nothing at all
    # STARTED: the built-in jobs set ``track_started`` (so the result backend records it); any other
    # linked task gets its "started" event from task_prerun. Tracking STARTED for every task would
    # cost plain tasks an extra result write each (see docs/github.md, throughput).
    signals.before_task_publish.connect(on_before_publish, weak=False, dispatch_uid="sentinel-github-queued")
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="sentinel-github-started")
    if on_lease not in task_module.lease_hooks:
        task_module.lease_hooks.append(on_lease)
    for hooks, hook in ((WorkerRuntime.on_start, start_worker_mirror), (WorkerRuntime.on_stop, stop_worker_mirror)):
        if hook not in hooks:
            hooks.append(hook)


def start_worker_mirror(runtime) -> None:
    """``WorkerRuntime.on_start``: say the worker is up; run a mirror thread (it acts only as leader)."""
    cfg = runtime.cfg
    if not configured(cfg):
        return
    outbox.append("worker", runtime.worker_id, {"status": "online", "incarnation": runtime.incarnation,
                                                "at": int(time.time() * 1000)}, cfg=cfg)
    if not cfg.get("github.mirror.inWorkers"):
        return
    thread = MirrorThread(Mirror(cfg, worker_id=runtime.worker_id))
    runtime.github_mirror = thread
    thread.start()


def stop_worker_mirror(runtime) -> None:
    """``WorkerRuntime.on_stop``: hand the mirror over at once; record a clean stop."""
    thread = getattr(runtime, "github_mirror", None)
    if thread is not None:
        thread.stop()
    cfg = runtime.cfg
    if not configured(cfg):
        return
    outbox.append("worker", runtime.worker_id, {"status": "stopped", "reason": "warm shutdown, deregistered",
                                                "incarnation": runtime.incarnation,
                                                "processed": worker_state.all_total_count[0],
                                                "at": int(time.time() * 1000)}, final=True, cfg=cfg)
