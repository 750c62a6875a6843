"""Job commands a pool child is running, noted by task id, so that no command outlives its task.

A job's command runs in its own session (``start_new_session``), so it survives the pool child
that started it. While the child lives, the job runner stops the command's process group itself on
any error (jobs.py). When the child dies first — kill -9, the OOM killer, Celery's hard time limit —
the worker's main process reads the note and stops the group: :class:`CommandRequest` (Sentinel
tasks' ``Request``) does it on ``WorkerLostError`` and on a hard time limit.

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


def stop_orphan(task_id: str | None) -> bool:
    """Stop the command noted for ``task_id`` if it still runs (SIGTERM, then SIGKILL after a grace
    period, in the background); True if one was signalled."""
    path = _note_path(task_id)
    if path is None:
        return False
    try:
        pid_text, _, started = path.read_text().partition(" ")
        path.unlink()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    if started.strip() != _start_time(pid):
        return False  # already gone, or the pid now belongs to another process
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    logger.warning("sentinel: task %s ended without its pool process; stopping its command (process group %d)",
                   task_id, pid)
    threading.Thread(target=_kill_after_grace, args=(pid,), name="sentinel-stop-command", daemon=True).start()
    return True


def _kill_after_grace(pgid: int) -> None:
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class CommandRequest(Request):
    """Celery's request, plus: a task whose pool process was lost or hit the hard time limit has
    its job command stopped by the worker's main process."""

    def on_timeout(self, soft, timeout):
        if not soft:
            stop_orphan(self.id)
        return super().on_timeout(soft, timeout)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc) if isinstance(exc, ExceptionWithTraceback) else exc
        if isinstance(exc, (WorkerLostError, TimeLimitExceeded)):
            stop_orphan(self.id)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
