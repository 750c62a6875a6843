"""Running a job's command: an argv (never a shell), optional cwd/env/timeout, bounded output.

The built-in job tasks (``workers.build``, ``workers.test``, ``workers.deploy``) are thin wrappers
around :func:`run_job`. Every argument is checked before the command starts (:class:`JobArgumentError`
names the argument): nothing is converted silently, so ``timeout="600"`` or an ``argv`` holding
``None`` is refused rather than half-run. Once the command has started, whatever ends the task — a
lost lease, a timeout, Celery's soft time limit, any exception — stops the command's whole process
group before the task returns, so a lease is never released while its command still runs. If the
pool process itself dies first (kill -9, hard time limit), the worker's main process stops the
command from the note the runner leaves (worker/commands.py).
"""
from __future__ import annotations

import collections
import math
import numbers
import os
import signal
import subprocess
import threading
import time
from typing import Mapping

from sentinel_celery.config import get_config
from sentinel_celery.worker import commands

OUTPUT_TAIL_LINES = 40
OUTPUT_TAIL_BYTES = 4000


class JobFailed(Exception):
    """The command exited non-zero or timed out; the message carries the output tail.

    ``args`` are (message, exit_code, output_tail), so Celery's ``type(exc)(*exc.args)`` rebuild keeps them."""

    def __init__(self, message: str, exit_code: int | None = None, output_tail: str = ""):
        self.exit_code, self.output_tail = exit_code, output_tail
        super().__init__(message, exit_code, output_tail)

    def __str__(self) -> str:
        return str(self.args[0])


class JobArgumentError(ValueError):
    """A job argument is invalid; raised before the command starts. The message names the argument."""


def check_argv(argv) -> list[str]:
    """``argv`` as a list: a non-empty list or tuple of ``str``, nothing converted."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple)) or not argv:
        raise JobArgumentError("argv must be a non-empty list of strings (commands never run through a shell), "
                               f"got {_short(argv)}")
    for i, item in enumerate(argv):
        if not isinstance(item, str):
            raise JobArgumentError(f"argv[{i}] must be a string, got {type(item).__name__} {_short(item)}")
        if "\0" in item:
            raise JobArgumentError(f"argv[{i}] contains a NUL character")
    return list(argv)


def check_env(env) -> dict[str, str]:
    """``env`` as a dict of str to str; keys without ``=`` or NUL, values without NUL."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise JobArgumentError(f"env must be a mapping of strings to strings, got {type(env).__name__}")
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise JobArgumentError(f"env key {_short(key)} must be a non-empty string without '=' or NUL")
        if not isinstance(value, str) or "\0" in value:
            raise JobArgumentError(f"env[{key!r}] must be a string without NUL, got {type(value).__name__} "
                                   f"{_short(value)}")
    return dict(env)


def check_cwd(cwd) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, str) or not cwd or "\0" in cwd:
        raise JobArgumentError(f"cwd must be a directory path (a string), got {type(cwd).__name__} {_short(cwd)}")
    if not os.path.isdir(cwd):
        raise JobArgumentError(f"cwd {cwd!r} is not an existing directory on this worker")
    return cwd


def check_timeout(timeout) -> float | None:
    """A positive, finite number of seconds (``bool`` and numeric strings are refused), or None."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise JobArgumentError(f"timeout must be a number of seconds, got {type(timeout).__name__} "
                               f"{_short(timeout)}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise JobArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the command and everything it started (its session); return once the command is gone."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what ignored SIGTERM, and what the command left behind
    except ProcessLookupError:
        pass
    proc.wait()


def run_command(argv, *, cwd: str | None = None, env: Mapping[str, str] | None = None,
                timeout: float | None = None, lease=None, task_id: str | None = None) -> dict:
    """Run ``argv``; return exit_code, duration, output_tail, timed_out, lease_lost.

    Raises :class:`JobArgumentError` before anything starts if an argument is invalid."""
    argv, env, cwd, timeout = check_argv(argv), check_env(env), check_cwd(cwd), check_timeout(timeout)
    full_env = {**os.environ, **env}
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

    commands.note(task_id, proc.pid)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = lease_lost = False
    try:
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
    except BaseException:
        # a soft time limit, a signal, a bug: the command must not outlive the task (and its lease)
        _kill_group(proc)
        raise
    finally:
        commands.forget(task_id)
    reader.join(timeout=5)
    output = "\n".join(tail)[-OUTPUT_TAIL_BYTES:]
    return {"exit_code": proc.returncode, "duration": round(time.monotonic() - started, 3),
            "output_tail": output, "timed_out": timed_out, "lease_lost": lease_lost}


def run_job(task, argv, *, cwd=None, env=None, timeout=None, github_issue=None, sha=None) -> dict:
    """The body of a built-in job task; raise :class:`JobFailed` on a non-zero exit or timeout."""
    lease = task.lease
    outcome = run_command(argv, cwd=cwd, env=env, timeout=timeout, lease=lease, task_id=task.request.id)
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
