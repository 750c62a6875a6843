"""A private redis-server for fault tests: start, stop (kill -9 or SHUTDOWN) and restart it on the same
free loopback port, with or without append-only persistence.

    with PrivateRedis(appendonly=True) as server:
        url = server.url
        server.stop()            # Redis is down: clients get ConnectionError
        server.start()           # back on the same port, with its AOF (or empty without it)

Tests that need Redis to go away use this, never the shared Redis. :class:`NetworkCut` cuts a client off
from a Redis that keeps running (a partition).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Callable

from sentinel_celery.ops.embedded import free_port, redis_answers, redis_binary


class PrivateRedis:
    def __init__(self, *, appendonly: bool = False, port: int | None = None):
        self.appendonly = appendonly
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="sentinel-faults-redis-")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning",
                "--appendonly", "yes" if self.appendonly else "no"]
        if self.appendonly:
            argv += ["--appendfsync", "always"]  # nothing acknowledged is lost on a kill -9
        return argv

    def start(self, timeout: float = 15.0) -> str:
        if self.running():
            return self.url
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.proc.stderr.read().decode(errors='replace')}")
            if redis_answers(self.url, 0.2):
                self.starts += 1
                return self.url
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: what an append-only file holds survives, nothing else."""
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)
            if self.proc.stderr:
                self.proc.stderr.close()

    def stop(self) -> None:
        """Redis goes away (kill -9, so no final save beyond what append-only already wrote)."""
        self.kill()

    def restart(self, down_s: float = 0.0) -> str:
        self.stop()
        time.sleep(down_s)
        return self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PrivateRedis":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NetworkCut:
    """A TCP forwarder to a Redis port that can cut the network (every connection dropped, new ones refused)
    and restore it, while Redis itself keeps running: a partition, as a client sees it.

        with NetworkCut(server.port) as cut:
            client = redis.Redis(port=cut.port)
            cut.cut(); ...; cut.restore()
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._trap: tuple[bytes, Callable[[], None]] | None = None

    def trap(self, marker: bytes, action: Callable[[], None]) -> None:
        """The first reply from Redis that holds ``marker`` is not passed on: ``action()`` runs instead (once)."""
        self._trap = (marker, action)

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it; close() alone does not
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            for a, b, replies in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, replies), daemon=True).start()

    def _sprung(self, data: bytes) -> bool:
        with self._lock:
            trap = self._trap
            if trap is None or trap[0] not in data:
                return False
            self._trap = None
        trap[1]()
        return True

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self._trap is not None and self._sprung(data):
                    continue
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "NetworkCut":
        self.restore()
        return self

    def __exit__(self, *exc) -> None:
        self.cut()
