"""Fault injection, switchable while the hub runs.

Owns :class:`Faults`: the knobs and the decisions taken from them for each
API request (admin ``/_hub`` requests and the HTML view are never faulted).

* ``fail_rate`` (0..1): that share of requests answers ``fail_status`` (502 by
  default), drawn from a ``random.Random(seed)`` so runs can be replayed;
  ``fail_next`` fails the next N requests for sure; ``fail_match`` (a regex on
  ``"METHOD /path"``) narrows both to some requests;
  ``fail_mode`` ``"before"`` (default) fails without touching state,
  ``"after"`` applies the request and then answers 5xx, the case that tests a
  client's idempotency.
* ``latency_ms``: added to every request before it is handled.
* an outage: every request answers 503 for ``outage_seconds`` or, with
  ``outage=True``, until cleared.
* ``exhaust_rate_limit``: every token's primary limit reads as used up
  (``True`` until cleared, or a number of seconds).
"""

from __future__ import annotations

import random
import re
import threading
import time
from typing import Any, Callable

_FAIL_STATUSES = (500, 502, 503, 504)


class Faults:
    def __init__(self, clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._seed = seed
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.fail_rate = 0.0
            self.fail_status = 502
            self.fail_next = 0
            self.fail_match: re.Pattern[str] | None = None
            self.fail_mode = "before"
            self.latency_ms = 0.0
            self.outage_until: float | None = None  # inf while "until cleared"
            self.exhaust_until: float | None = None

    def configure(self, **changes: Any) -> None:
        """Apply a partial update; unknown keys or bad values raise ValueError before anything changes."""
        now = self._clock()
        staged: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "fail_rate":
                rate = float(value)
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("fail_rate must be between 0 and 1")
                staged[key] = rate
            elif key == "fail_status":
                if int(value) not in _FAIL_STATUSES:
                    raise ValueError(f"fail_status must be one of {_FAIL_STATUSES}")
                staged[key] = int(value)
            elif key == "fail_next":
                staged[key] = max(0, int(value))
            elif key == "fail_match":
                staged[key] = re.compile(value) if value else None
            elif key == "fail_mode":
                if value not in ("before", "after"):
                    raise ValueError("fail_mode must be 'before' or 'after'")
                staged[key] = value
            elif key == "latency_ms":
                staged[key] = max(0.0, float(value))
            elif key == "seed":
                staged["_seed"] = None if value is None else int(value)
            elif key == "outage":
                staged["outage_until"] = float("inf") if value else None
            elif key == "outage_seconds":
                staged["outage_until"] = now + float(value) if value and float(value) > 0 else None
            elif key == "exhaust_rate_limit":
                staged["exhaust_until"] = self._until(now, value)
            else:
                raise ValueError(f"unknown fault setting {key!r}")
        with self._lock:
            for key, value in staged.items():
                if key == "_seed":
                    self._seed = value
                    self._rng = random.Random(value)
                else:
                    setattr(self, key, value)

    @staticmethod
    def _until(now: float, value: Any) -> float | None:
        if value is True:
            return float("inf")
        if value is False or value is None or float(value) <= 0:
            return None
        return now + float(value)

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            return {
                "fail_rate": self.fail_rate,
                "fail_status": self.fail_status,
                "fail_next": self.fail_next,
                "fail_match": self.fail_match.pattern if self.fail_match else None,
                "fail_mode": self.fail_mode,
                "seed": self._seed,
                "latency_ms": self.latency_ms,
                "outage": self._active(self.outage_until, now),
                "outage_remaining_seconds": self._remaining(self.outage_until, now),
                "exhaust_rate_limit": self._active(self.exhaust_until, now),
                "exhaust_remaining_seconds": self._remaining(self.exhaust_until, now),
            }

    @staticmethod
    def _active(until: float | None, now: float) -> bool:
        return until is not None and now < until

    @staticmethod
    def _remaining(until: float | None, now: float) -> float | None:
        if until is None or until == float("inf") or now >= until:
            return None
        return round(until - now, 3)

    def latency(self) -> float:
        return self.latency_ms / 1000.0

    def in_outage(self) -> bool:
        return self._active(self.outage_until, self._clock())

    def rate_limit_exhausted(self) -> tuple[bool, float | None]:
        """(exhausted?, until) — until is None when exhaustion lasts until cleared."""
        until = self.exhaust_until
        if not self._active(until, self._clock()):
            return False, None
        return True, None if until == float("inf") else until

    def draw_failure(self, method: str, path: str) -> tuple[int, str] | None:
        """Decide whether this request fails: (status, mode) or None."""
        with self._lock:
            if self.fail_match is not None and not self.fail_match.search(f"{method} {path}"):
                return None
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status, self.fail_mode
            if self.fail_rate > 0 and self._rng.random() < self.fail_rate:
                return self.fail_status, self.fail_mode
            return None
