"""The mirror's request budget: when it may send its next request to GitHub.

GitHub allows 5,000 requests an hour per token, about 80 content-creating requests a minute and
500 an hour, wants writes serial about a second apart, and says when to come back with
``retry-after`` (secondary limits) or ``x-ratelimit-reset`` (primary limit used up). The budget:

* spaces writes (POST/PATCH/PUT/DELETE) ``1 / maxWritesPerSecond`` apart and keeps at most
  ``maxWritesPerMinute`` in any minute and ``maxWritesPerHour`` in any hour;
* blocks every request until ``retry-after`` / ``x-ratelimit-reset`` once GitHub said so;
* slows reads and writes down as ``x-ratelimit-remaining`` falls below ``reserveRequests``: what
  remains is spread evenly over the time left until the reset.

:meth:`Budget.delay` says how long to wait; :meth:`Budget.note` learns from each answer. Only the
mirror leader spends the budget; its state is kept in Redis so that ``sentinel github status``
and the next leader see it.

Redis keys (under the namespace):
  github:budget          hash: limit, remaining, reset, blocked_until, blocked_reason, last_write,
                         last_request (epoch seconds)
  github:budget:writes   zset: write id -> epoch seconds, the last hour of writes
  github:status          hash (contract read by snapshot.py and metrics): requests:<http status>
                         counters, rate_limit_remaining, rate_limit_reset
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

import redis

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass
class Pace:
    per_second: float = 1.0
    per_minute: int = 60
    per_hour: int = 450
    reserve: int = 200

    @classmethod
    def from_config(cls, cfg) -> "Pace":
        m = "github.mirror."
        return cls(float(cfg.get(m + "maxWritesPerSecond")), int(cfg.get(m + "maxWritesPerMinute")),
                   int(cfg.get(m + "maxWritesPerHour")), int(cfg.get(m + "reserveRequests")))


class Budget:
    def __init__(self, client: redis.Redis, namespace: str, pace: Pace, clock: Callable[[], float] = time.time):
        self.client = client
        self.ns = namespace
        self.pace = pace
        self.clock = clock
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset: float = 0.0
        self.blocked_until = 0.0
        self.blocked_reason = ""
        self.last_write = 0.0
        self.last_request = 0.0
        self.writes: list[float] = []  # the last hour, oldest first

    @property
    def key(self) -> str:
        return f"{self.ns}github:budget"

    @property
    def writes_key(self) -> str:
        return f"{self.ns}github:budget:writes"

    @property
    def status_key(self) -> str:
        return f"{self.ns}github:status"

    def load(self) -> "Budget":
        """Take over what an earlier leader learnt (blocks, write windows)."""
        now = self.clock()
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key)
        pipe.zrangebyscore(self.writes_key, now - 3600, "+inf", withscores=True)
        state, writes = pipe.execute()

        def num(name, default=0.0):
            try:
                return float(state[name]) if state.get(name) not in (None, "") else default
            except ValueError:
                return default
        self.limit = int(num("limit")) if state.get("limit") else None
        self.remaining = int(num("remaining")) if state.get("remaining") else None
        self.reset = num("reset")
        self.blocked_until = num("blocked_until")
        self.blocked_reason = state.get("blocked_reason", "")
        self.last_write = num("last_write")
        self.last_request = num("last_request")
        self.writes = sorted(score for _, score in writes)
        return self

    # -- deciding ----------------------------------------------------------------------------
    def delay(self, write: bool) -> tuple[float, str]:
        """Seconds to wait before the next request (0 if it may go now), and why."""
        now = self.clock()
        waits: list[tuple[float, str]] = [(0.0, "")]
        if self.blocked_until > now:
            waits.append((self.blocked_until - now, self.blocked_reason or "blocked by GitHub"))
        if self.remaining is not None and self.reset > now:
            if self.remaining <= 0:
                waits.append((self.reset - now, "primary rate limit used up; waiting for x-ratelimit-reset"))
            elif self.remaining < self.pace.reserve:
                gap = (self.reset - now) / max(self.remaining, 1)
                waits.append((self.last_request + gap - now, f"x-ratelimit-remaining {self.remaining} is low"))
        if write:
            self._trim(now)
            waits.append((self.last_write + 1.0 / max(self.pace.per_second, 0.001) - now, "write pacing"))
            minute = [t for t in self.writes if t > now - 60]
            if len(minute) >= self.pace.per_minute:
                waits.append((minute[-self.pace.per_minute] + 60 - now, "maxWritesPerMinute"))
            if len(self.writes) >= self.pace.per_hour:
                waits.append((self.writes[-self.pace.per_hour] + 3600 - now, "maxWritesPerHour"))
        seconds, reason = max(waits, key=lambda w: w[0])
        return max(seconds, 0.0), reason

    def _trim(self, now: float) -> None:
        cut = now - 3600
        while self.writes and self.writes[0] <= cut:
            self.writes.pop(0)

    # -- learning ----------------------------------------------------------------------------
    def note(self, method: str, status: int | None, headers: Mapping[str, str] | None) -> None:
        """Record one request and what GitHub's answer says about the limits (status None: no answer)."""
        now = self.clock()
        write = method.upper() in WRITE_METHODS
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.last_request = now
        fields: dict[str, object] = {"last_request": now}
        if write and status is not None and status < 500:
            self.last_write = now
            self.writes.append(now)
            fields["last_write"] = now
        if "x-ratelimit-remaining" in headers:
            try:
                self.remaining = int(headers["x-ratelimit-remaining"])
                self.limit = int(headers.get("x-ratelimit-limit") or self.limit or 0) or None
                self.reset = float(headers.get("x-ratelimit-reset") or self.reset)
            except ValueError:
                pass
            fields.update(remaining=self.remaining, limit=self.limit or "", reset=self.reset)
        if status in (403, 429):
            retry_after = headers.get("retry-after")
            if retry_after:
                try:
                    self.block(now + float(retry_after), f"secondary rate limit: retry-after {retry_after}s", fields)
                except ValueError:
                    pass
            elif self.remaining == 0 and self.reset > now:
                self.block(self.reset, "primary rate limit used up; waiting for x-ratelimit-reset", fields)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key, mapping=fields)
        if write and status is not None and status < 500:
            pipe.zadd(self.writes_key, {f"{now:.6f}-{uuid.uuid4().hex[:6]}": now})
            pipe.zremrangebyscore(self.writes_key, "-inf", now - 3600)
        pipe.hincrby(self.status_key, f"requests:{status if status is not None else 'error'}", 1)
        if self.remaining is not None:
            pipe.hset(self.status_key, mapping={"rate_limit_remaining": self.remaining,
                                                "rate_limit_reset": self.reset})
        pipe.execute()

    def block(self, until: float, reason: str, fields: dict | None = None) -> None:
        if until <= self.blocked_until:
            return
        self.blocked_until, self.blocked_reason = until, reason
        if fields is not None:
            fields.update(blocked_until=until, blocked_reason=reason)
        else:
            self.client.hset(self.key, mapping={"blocked_until": until, "blocked_reason": reason})

    def snapshot(self) -> dict:
        now = self.clock()
        self._trim(now)
        return {"rate_limit": self.limit, "rate_limit_remaining": self.remaining,
                "rate_limit_reset": self.reset or None,
                "blocked_until": self.blocked_until if self.blocked_until > now else None,
                "blocked_reason": self.blocked_reason if self.blocked_until > now else None,
                "writes_last_minute": sum(1 for t in self.writes if t > now - 60),
                "writes_last_hour": len(self.writes)}
