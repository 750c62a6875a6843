"""Running a job's command: an argv (never a shell), optional cwd/env/timeout, bounded output.

The built-in job tasks (``workers.build``, ``workers.test``, ``workers.deploy``) are thin wrappers
around :func:`run_job`. If the task holds a lease and loses it, the command is stopped: a deploy
that is no longer exclusive must not go on.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from typing import Mapping, Sequence

from sentinel_celery.config import get_config

OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_BYTES = 4000


class JobFailed(Exception):
    """The command exited non-zero or timed out; the message carries the output tail."""

    def __init__(self, message: str, exit_code: int | None = None, output_tail: str = ""):
        self.exit_code, self.output_tail = exit_code, output_tail
        super().__init__(message)

    def __reduce__(self):
        return (JobFailed, (self.args[0], self.exit_code, self.output_tail))


def _check_argv(argv) -> list[str]:
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence) or not argv:
        raise TypeError("argv must be a non-empty list of strings (commands never run through a shell), "
                        f"got {argv!r}")
    return [str(a) for a in argv]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_command(argv, *, cwd: str | None = None, env: Mapping[str, str] | None = None,
                timeout: float | None = None, lease=None) -> dict:
    """Run ``argv``; return exit_code, duration, output_tail, timed_out, lease_lost."""
    argv = _check_argv(argv)
    full_env = {**os.environ, **{str(k): str(v) for k, v in (env or {}).items()}}
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise JobFailed(f"cannot start {argv[0]!r}: {exc}", exit_code=None) from None

    def pump():
        for raw in iter(proc.stdout.readline, b""):
            tail.append(raw.decode("utf-8", "replace").rstrip("\n"))
        proc.stdout.close()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = lease_lost = False
    while proc.poll() is None:
        if timeout is not None and time.monotonic() - started > timeout:
            timed_out = True
            _kill_group(proc)
            break
        if lease is not None and lease.lost:
            lease_lost = True
            _kill_group(proc)
            break
        try:
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    reader.join(timeout=5)
    output = "\n".join(tail)[-OUTPUT_TAIL_BYTES:]
    return {"exit_code": proc.returncode, "duration": round(time.monotonic() - started, 3),
            "output_tail": output, "timed_out": timed_out, "lease_lost": lease_lost}


def run_job(task, argv, *, cwd=None, env=None, timeout=None, github_issue=None, sha=None) -> dict:
    """The body of a built-in job task; raise :class:`JobFailed` on a non-zero exit or timeout."""
    lease = task.lease
    outcome = run_command(argv, cwd=cwd, env=env, timeout=timeout, lease=lease)
    result = {
        **outcome,
        "worker": get_config().worker_id,
        "task_type": task.task_type,
        "argv": list(argv),
        "github_issue": github_issue,
        "sha": sha,
        "lease_token": lease.token if lease else None,
    }
    if outcome["lease_lost"]:
        lease.check()
    if outcome["timed_out"]:
        raise JobFailed(f"timed out after {timeout}s; output tail:\n{outcome['output_tail']}",
                        outcome["exit_code"], outcome["output_tail"])
    if outcome["exit_code"] != 0:
        raise JobFailed(f"exit code {outcome['exit_code']}; output tail:\n{outcome['output_tail']}",
                        outcome["exit_code"], outcome["output_tail"])
    return result
