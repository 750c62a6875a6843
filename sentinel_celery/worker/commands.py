"""Job commands a pool child is running, noted by task id, so that no command outlives its task.

A job's command runs in its own session (``start_new_session``), so it survives the pool child
that started it. While the child lives, the job runner stops the command's process group itself on
any error (jobs.py). When the child dies first — kill -9, the OOM killer, Celery's hard time limit —
the worker's main process reads the note and stops the group: :class:`CommandRequest` (Sentinel
tasks' ``Request``) does it on ``WorkerLostError`` and on a hard time limit. On ``WorkerLostError``
(the pool process is gone for sure) it then releases the leases the task held — only once the
command has exited — so the re-delivered task (``task_reject_on_worker_lost``) can take them at
once instead of waiting out their TTL.

A note is a file ``<tmp>/sentinel-commands-<uid>/<task id>`` holding the command's pid (its process
group id) and its start time from ``/proc``, so a pid reused by another process is never signalled.
Owns no Redis keys.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request

from sentinel_celery.config import get_config
from sentinel_celery.state.leases import get_backend

logger = logging.getLogger(__name__)

NOTES = Path(tempfile.gettempdir()) / f"sentinel-commands-{os.getuid()}"
_TASK_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
STOP_GRACE_SECONDS = 5.0


def _start_time(pid: int) -> str:
    """The process' start time (clock ticks since boot) from /proc; "" where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _note_path(task_id: str | None) -> Path | None:
    if not task_id or not _TASK_ID.fullmatch(task_id) or task_id in (".", ".."):
        return None
    return NOTES / task_id


def note(task_id: str | None, pid: int) -> None:
    """Remember that ``task_id`` runs the process group ``pid``."""
    path = _note_path(task_id)
    if path is None:
        return
    try:
        NOTES.mkdir(mode=0o700, exist_ok=True)
        if NOTES.stat().st_uid != os.getuid():
            return  # someone else's directory: do not trust it
        path.write_text(f"{pid} {_start_time(pid)}")
    except OSError as exc:
        logger.warning("sentinel: cannot note the command of task %s: %s", task_id, exc)


def forget(task_id: str | None) -> None:
    path = _note_path(task_id)
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def stop_orphan(task_id: str | None) -> int | None:
    """SIGTERM the command noted for ``task_id`` if it still runs; its process group id, else None."""
    path = _note_path(task_id)
    if path is None:
        return None
    try:
        pid_text, _, started = path.read_text().partition(" ")
        path.unlink()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if started.strip() != _start_time(pid):
        return None  # already gone, or the pid now belongs to another process
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return None
    logger.warning("sentinel: task %s ended without its pool process; stopping its command (process group %d)",
                   task_id, pid)
    return pid


def wait_gone(pgid: int) -> None:
    """Wait until process group ``pgid`` has exited; SIGKILL it after the grace period."""
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    while time.monotonic() < deadline + STOP_GRACE_SECONDS:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def release_leases_of(task_id: str) -> list[str]:
    """Release the leases this worker holds for ``task_id`` (its pool process is gone)."""
    worker_id = get_config().worker_id
    backend = get_backend()
    released = []
    for held in backend.held_by(worker_id):
        if held.get("task_id") == task_id and backend.release(held["name"], held["owner"], held["token"], worker_id):
            released.append(held["name"])
            logger.warning("sentinel: released lease %s (token %s) of task %s, whose pool process was lost",
                           held["name"], held["token"], task_id)
    return released


def _clean_up(task_id: str, release: bool) -> None:
    try:
        pgid = stop_orphan(task_id)
        if pgid is not None:
            wait_gone(pgid)
        if release:
            release_leases_of(task_id)
    except Exception:
        logger.exception("sentinel: cleaning up after task %s failed", task_id)


def clean_up_in_background(task_id: str | None, *, release: bool) -> None:
    """Stop the task's command and (``release``) then release its leases, off the worker's main loop."""
    if task_id:
        threading.Thread(target=_clean_up, args=(task_id, release), name="sentinel-task-cleanup",
                         daemon=True).start()


class CommandRequest(Request):
    """Celery's request, plus: a task whose pool process was lost or hit the hard time limit has
    its job command stopped by the worker's main process."""

    def on_timeout(self, soft, timeout):
        if not soft:  # the pool process is being killed, maybe not dead yet: leave its leases to their TTL
            clean_up_in_background(self.id, release=False)
        return super().on_timeout(soft, timeout)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc) if isinstance(exc, ExceptionWithTraceback) else exc
        if isinstance(exc, (WorkerLostError, TimeLimitExceeded)):
            clean_up_in_background(self.id, release=isinstance(exc, WorkerLostError))
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
