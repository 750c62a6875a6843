"""The request log: what clients sent and what the hub answered.

Owns :class:`RequestLog`, a bounded in-memory list of :class:`LoggedRequest`
(method, path, query, status, token *label* — never the raw token — time,
duration). Every API request is recorded, rejected ones included; admin
``/_hub`` requests and the HTML view are not. Each entry has a sequence number
so a reader can ask for what came ``since`` an earlier read.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Iterable


@dataclass(frozen=True)
class LoggedRequest:
    seq: int
    ts: float
    method: str
    path: str
    query: str
    status: int
    token: str | None  # the token's label; None when no token was sent, "invalid" when it was unknown
    duration_ms: float

    @property
    def time(self) -> str:
        return datetime.fromtimestamp(self.ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = self.time
        return data


class RequestLog:
    def __init__(self, maxlen: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LoggedRequest] = deque(maxlen=maxlen)
        self._seq = 0

    def record(
        self, *, method: str, path: str, query: str, status: int, token: str | None, started: float
    ) -> LoggedRequest:
        now = time.time()
        with self._lock:
            self._seq += 1
            entry = LoggedRequest(self._seq, now, method, path, query, status, token, round((now - started) * 1000, 3))
            self._entries.append(entry)
        return entry

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def entries(
        self,
        *,
        since: int | None = None,
        since_time: float | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        status: int | None = None,
        token: str | None = None,
    ) -> list[LoggedRequest]:
        with self._lock:
            items: Iterable[LoggedRequest] = list(self._entries)
        out = []
        for entry in items:
            if since is not None and entry.seq <= since:
                continue
            if since_time is not None and entry.ts < since_time:
                continue
            if method is not None and entry.method != method.upper():
                continue
            if path_prefix is not None and not entry.path.startswith(path_prefix):
                continue
            if status is not None and entry.status != status:
                continue
            if token is not None and entry.token != token:
                continue
            out.append(entry)
        return out
