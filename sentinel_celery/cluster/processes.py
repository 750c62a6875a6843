"""Starting and stopping Celery worker processes on this host (demo, local scaler, tests, benchmarks).

A worker is started as ``python -m celery -A <app> worker ...`` in its own session, so that a kill
reaches its pool children too. Nothing here uses a shell.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence


class WorkerProcess:
    def __init__(self, worker_id: str, argv: list[str], env: dict, log_path: Path | None):
        self.worker_id = worker_id
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        """kill -9 of the worker's main process and its pool children (a machine dying)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0, *, exit_grace: float = 0.0) -> int | None:
        """Warm shutdown (SIGTERM); SIGKILL the group if it does not finish in ``timeout``.

        ``exit_grace``: seconds to let a worker that was already told to shut down (remote control) exit
        by itself first — a SIGTERM that lands while Celery is tearing down can end it by the signal."""
        if exit_grace and self.alive():
            try:
                self.proc.wait(timeout=exit_grace)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray pool children, if any
        except (ProcessLookupError, PermissionError):
            pass
        if hasattr(self._log, "close"):
            self._log.close()
        return self.proc.returncode


def worker_argv(worker_id: str, *, app: str = "sentinel_celery", queues: Sequence[str] | None = None,
                concurrency: int | None = None, include: Sequence[str] = (), loglevel: str = "INFO",
                pool: str = "prefork", extra: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-n", f"{worker_id}@%h", "-l", loglevel,
            "-P", pool, "--without-gossip", "--without-mingle"]
    if queues:
        argv += ["-Q", ",".join(queues)]
    if concurrency:
        argv += ["-c", str(concurrency)]
    if include:  # one -I with a comma-separated list: Celery keeps only the last of repeated -I
        argv += ["-I", ",".join(include)]
    return argv + list(extra)


def start_worker(worker_id: str, *, env: Mapping[str, str] | None = None, log_dir: Path | None = None,
                 **argv_options) -> WorkerProcess:
    full_env = {**os.environ, **(env or {}), "WORKER_ID": worker_id}
    root = str(Path(__file__).resolve().parents[2])  # the directory holding sentinel_celery/ and workers/
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, full_env.get("PYTHONPATH", "")) if p)
    log_path = Path(log_dir) / f"{worker_id}.log" if log_dir else None
    return WorkerProcess(worker_id, worker_argv(worker_id, **argv_options), full_env, log_path)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
