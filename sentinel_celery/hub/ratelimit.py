"""Primary and secondary rate limits, per token.

Owns :class:`Limits` (the numbers, all configurable so tests can use small
ones) and :class:`RateLimiter`:

* primary: ``core`` requests per ``window`` seconds (GitHub: 5,000 an hour), a
  fixed window that starts at the token's first counted request, reported in
  the ``x-ratelimit-*`` headers;
* secondary: content-creating requests (POST/PATCH/PUT/DELETE) per minute
  (80) and per hour (500), sliding windows; and requests in flight at once (100);
* unauthenticated: requests turned away for their credentials (GitHub: 60 an
  hour per address; every hub client is on loopback, so they share one
  window), reported in the ``x-ratelimit-*`` headers of the 401 answers.

GitHub keys limits by user or installation; the hub keys them by token, which
is the same thing when each actor has one token.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable


@dataclass
class Limits:
    core: int = 5000
    window: float = 3600.0
    writes_per_minute: int = 80
    writes_per_hour: int = 500
    minute_window: float = 60.0
    hour_window: float = 3600.0
    max_concurrency: int = 100
    secondary_status: int = 403  # GitHub sends 403 or 429 for secondary limits
    unauthenticated: int = 60  # per window, for requests without valid credentials

    def __post_init__(self) -> None:
        if self.secondary_status not in (403, 429):
            raise ValueError("secondary_status must be 403 or 429")

    def for_unauthenticated(self) -> "Limits":
        """The primary limit of requests without valid credentials: ``unauthenticated`` per ``window``."""
        return Limits(core=self.unauthenticated, window=self.window)


@dataclass(frozen=True)
class Quota:
    limit: int
    used: int
    reset: int  # epoch seconds
    resource: str = "core"

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-used": str(self.used),
            "x-ratelimit-reset": str(self.reset),
            "x-ratelimit-resource": self.resource,
        }

    def as_json(self) -> dict[str, int]:
        return {"limit": self.limit, "used": self.used, "remaining": self.remaining, "reset": self.reset}


class _Bucket:
    __slots__ = ("start", "used", "writes_minute", "writes_hour", "in_flight")

    def __init__(self, now: float) -> None:
        self.start = now
        self.used = 0
        self.writes_minute: deque[float] = deque()
        self.writes_hour: deque[float] = deque()
        self.in_flight = 0


class RateLimiter:
    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(now)
        elif now >= bucket.start + self.limits.window:
            bucket.start, bucket.used = now, 0
        return bucket

    def _quota(self, bucket: _Bucket) -> Quota:
        reset = math.ceil(bucket.start + self.limits.window)
        return Quota(self.limits.core, min(bucket.used, self.limits.core), reset)

    def quota(self, key: str) -> Quota:
        with self._lock:
            return self._quota(self._bucket(key, self._clock()))

    def consume(self, key: str) -> tuple[bool, Quota]:
        """Count one request; False (and nothing counted) when the window is used up."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            if bucket.used >= self.limits.core:
                return False, self._quota(bucket)
            bucket.used += 1
            return True, self._quota(bucket)

    def refund(self, key: str) -> Quota:
        """Give back one request (a 304 answer does not count, as on GitHub)."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            bucket.used = max(0, bucket.used - 1)
            return self._quota(bucket)

    def exhausted(self, key: str, until: float | None) -> Quota:
        """The quota to report while exhaustion is forced (fault injection)."""
        quota = self.quota(key)
        reset = quota.reset if until is None else max(quota.reset, math.ceil(until))
        return Quota(quota.limit, quota.limit, reset)

    def admit_write(self, key: str) -> int | None:
        """Record a content-creating request, or return the seconds to wait if it is over a secondary limit."""
        limits = self.limits
        with self._lock:
            now = self._clock()
            bucket = self._bucket(key, now)
            waits = []
            for times, cap, window in (
                (bucket.writes_minute, limits.writes_per_minute, limits.minute_window),
                (bucket.writes_hour, limits.writes_per_hour, limits.hour_window),
            ):
                while times and times[0] <= now - window:
                    times.popleft()
                if len(times) >= cap:
                    waits.append(times[0] + window - now)
            if waits:
                return max(1, math.ceil(max(waits)))
            bucket.writes_minute.append(now)
            bucket.writes_hour.append(now)
            return None

    def enter(self, key: str) -> bool:
        """Start a request; False if the token already has ``max_concurrency`` in flight."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            if bucket.in_flight >= self.limits.max_concurrency:
                return False
            bucket.in_flight += 1
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None and bucket.in_flight > 0:
                bucket.in_flight -= 1

    def reset(self) -> None:
        """Forget all counts (admin API, tests)."""
        with self._lock:
            for bucket in self._buckets.values():
                bucket.start, bucket.used = self._clock(), 0
                bucket.writes_minute.clear()
                bucket.writes_hour.clear()
