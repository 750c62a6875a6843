"""Centralized logs: worker and task log records shipped to one capped Redis stream, and read back.

:class:`RedisLogHandler` is a ``logging.Handler`` installed in the worker (worker/logs.py puts it on
Celery's worker and task loggers; pool children inherit it through fork). ``emit`` only appends a
small dict to a bounded in-memory buffer; a daemon thread flushes the buffer every half second (or
sooner when it fills) with one pipelined ``XADD ... MAXLEN ~ monitoring.logStreamMaxLen``. So a task
never waits on Redis to log, and while Redis is unreachable the oldest buffered records are dropped
(and counted) rather than memory growing. Each process (main or pool child) runs its own flusher,
started on its first record after a fork.

Record fields: ``ts`` (seconds, float), ``worker``, ``level``, ``task_id``, ``task_name``, ``logger``,
``pid``, ``msg`` (the formatted message, with the exception text if any). The stream entry id is
Redis time, so ``--since`` compares one clock across hosts.

Redis keys (under the namespace):
  logs     stream: one entry per record, capped at about monitoring.logStreamMaxLen entries
"""
from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import redis
from celery._state import get_current_task

from sentinel_celery.config import Config, get_config
from sentinel_celery.state.connection import get_redis, server_time_ms

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FLUSH_INTERVAL_S = 0.5
BATCH = 500


def stream_key(namespace: str) -> str:
    return f"{namespace}logs"


class RedisLogHandler(logging.Handler):
    """Buffers records and ships them from a background thread; see the module docstring."""

    def __init__(self, cfg: Config, level: int | str = logging.INFO, max_buffer: int = 10000,
                 flush_interval: float = FLUSH_INTERVAL_S):
        super().__init__(level)
        self.cfg = cfg
        self.max_buffer = max_buffer
        self.flush_interval = flush_interval
        self.maxlen = cfg.get("monitoring.logStreamMaxLen")
        self.key = stream_key(cfg.namespace)
        self.dropped = 0
        self.shipped = 0
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._buffer: collections.deque = collections.deque(maxlen=self.max_buffer)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked: records buffered by the parent are the parent's to ship
            self._reset()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sentinel-log-shipper", daemon=True)
            self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("sentinel_celery.state.logs", "redis")) or \
                threading.current_thread() is self._thread:
            return  # never log about shipping logs through the shipper
        try:
            self._ensure_thread()
            msg = record.getMessage()
            if record.exc_info:
                msg = f"{msg}\n{logging.Formatter().formatException(record.exc_info)}"
            task_id, task_name = _current_task(record)
            entry = {"ts": f"{record.created:.3f}", "worker": self.cfg.worker_id, "level": record.levelname,
                     "task_id": task_id or "", "task_name": task_name or "", "logger": record.name,
                     "pid": str(record.process or os.getpid()), "msg": msg}
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(entry)
            if len(self._buffer) >= BATCH:
                self._wake.set()
        except Exception:
            self.handleError(record)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._ship()
            except Exception:  # Redis away: keep the buffer (bounded), try again next round
                time.sleep(self.flush_interval)

    def flush(self) -> None:
        """Ship what is buffered now; never raises (logging calls it at exit, too)."""
        try:
            self._ship()
        except Exception:
            pass

    def _ship(self) -> None:
        if self._pid != os.getpid():
            return
        with self._flush_lock:
            while self._buffer:
                batch = []
                while self._buffer and len(batch) < BATCH:
                    batch.append(self._buffer.popleft())
                pipe = get_redis(self.cfg.redis_url).pipeline(transaction=False)
                for entry in batch:
                    pipe.xadd(self.key, entry, maxlen=self.maxlen, approximate=True)
                try:
                    pipe.execute()
                except redis.RedisError:
                    room = self._buffer.maxlen - len(self._buffer)
                    self.dropped += max(len(batch) - room, 0)
                    self._buffer.extendleft(reversed(batch[-room:] if room else []))  # back in order, bounded
                    raise
                self.shipped += len(batch)


def _current_task(record: logging.LogRecord) -> tuple[str | None, str | None]:
    task = get_current_task()
    if task is not None and task.request.id:
        return task.request.id, task.name
    # Celery's own worker messages carry the task in their args ("Task %(name)s[%(id)s] ...")
    data = record.args if isinstance(record.args, dict) else None
    if data and "id" in data:
        return str(data["id"]), str(data.get("name") or "") or None
    return None, None


_handler: RedisLogHandler | None = None


def install_handler(cfg: Config | None = None, loggers: tuple[logging.Logger, ...] = ()) -> RedisLogHandler | None:
    """Attach the (one per process) shipping handler to ``loggers`` (default: the root logger)."""
    global _handler
    cfg = cfg or get_config()
    if not cfg.get("monitoring.logShipping"):
        return None
    if _handler is None:
        _handler = RedisLogHandler(cfg, cfg.get("monitoring.logLevel"))
        atexit.register(flush_quietly)
    for target in loggers or (logging.getLogger(),):
        if _handler not in target.handlers:
            target.addHandler(_handler)
    return _handler


def flush_quietly(**kwargs) -> None:
    if _handler is not None:
        try:
            _handler.flush()
        except Exception:
            pass


# -- read side ---------------------------------------------------------------------------------------
@dataclass
class LogQuery:
    worker: str | None = None
    level: str | None = None          # minimum level
    since_ms: int | None = None       # only entries at or after this Redis time (ms)
    search: str | None = None         # case-insensitive substring of the message
    task_id: str | None = None

    def matches(self, entry: dict) -> bool:
        if self.worker and entry.get("worker") != self.worker:
            return False
        if self.level and LEVELS.index(entry.get("level", "INFO")) < LEVELS.index(self.level):
            return False
        if self.task_id and entry.get("task_id") != self.task_id:
            return False
        if self.search and self.search.lower() not in entry.get("msg", "").lower():
            return False
        return True


def _entry(entry_id: str, fields: dict) -> dict:
    return {"id": entry_id, **fields, "ts": float(fields.get("ts") or int(entry_id.split("-")[0]) / 1000)}


def parse_since(text: str) -> float:
    """'90s', '10m', '2h', '1d' (or plain seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m:
        raise ValueError(f"cannot read duration {text!r}: use e.g. 30s, 10m, 2h, 1d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def query(client: redis.Redis, namespace: str, q: LogQuery, limit: int = 100, scan_chunk: int = 1000) -> list[dict]:
    """The newest ``limit`` matching entries, oldest first. Reads backwards in chunks, stops at ``since``."""
    key = stream_key(namespace)
    found: list[dict] = []
    upper = "+"
    lower = f"{q.since_ms}-0" if q.since_ms else "-"
    while len(found) < limit:
        chunk = client.xrevrange(key, max=upper, min=lower, count=scan_chunk)
        if not chunk:
            break
        for entry_id, fields in chunk:
            e = _entry(entry_id, fields)
            if q.matches(e):
                found.append(e)
                if len(found) >= limit:
                    break
        if len(chunk) < scan_chunk:
            break
        upper = "(" + chunk[-1][0]
    return list(reversed(found))


def follow(client: redis.Redis, namespace: str, q: LogQuery, start_id: str = "$",
           block_ms: int = 1000, stop: threading.Event | None = None) -> Iterator[dict]:
    """Yield matching entries as they arrive (XREAD BLOCK) until ``stop`` is set."""
    key = stream_key(namespace)
    last = start_id
    while stop is None or not stop.is_set():
        res = client.xread({key: last}, block=block_ms, count=500)
        for _, entries in res or []:
            for entry_id, fields in entries:
                last = entry_id
                e = _entry(entry_id, fields)
                if q.matches(e):
                    yield e


def since_ms(client: redis.Redis, seconds: float) -> int | None:
    """Redis time ``seconds`` ago, in ms; None when that is before 1970 (every record is newer)."""
    now = server_time_ms(client)
    return None if seconds * 1000 >= now else now - int(seconds * 1000)


def format_entry(e: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"])) + f".{int(e['ts'] * 1000) % 1000:03d}"
    task = f" {e['task_name']}[{e['task_id']}]" if e.get("task_id") else ""
    return f"{when} {e.get('worker', '-')} {e.get('level', '-'):<8}{task} {e.get('msg', '')}"


def to_json_line(e: dict) -> str:
    return json.dumps(e, sort_keys=True)
