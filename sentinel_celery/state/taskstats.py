"""Task-side statistics: schedule-to-start latency and task outcomes, recorded where tasks run.

The client stamps every message it publishes with ``sentinel_sent`` (its wall clock, seconds); when a
pool child starts the task it computes ``now - max(sent, eta)``: how long the task waited for a
worker; outcomes are counted when the task ends (the signal handlers are in worker/taskstats.py).
Neither touches Redis on the task's path: both add to a per-process buffer that a background thread
flushes once a second in one pipeline, so the cost per task is a few dictionary updates. What a
process holds when it is killed (at most a second of samples) is lost; these are metrics, not
records. The clocks of the client and the worker are compared, so on hosts without NTP the latency
is off by their skew.

Redis keys (under the namespace):
  metrics:s2s:queues       set: queues with latency samples
  metrics:s2s:<queue>      hash: ``le:<bound>`` -> samples in that bucket (not cumulative), ``count``, ``sum``
  metrics:tasks            hash: outcome state (SUCCESS, FAILURE, RETRY, ...) -> count since the namespace began
  metrics:tasks:m:<minute> hash: the same per minute (epoch minute), expires after 15 minutes; gives rates
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter

import redis

from sentinel_celery.config import Config, get_config
from sentinel_celery.state.connection import get_redis

logger = logging.getLogger(__name__)

SENT_HEADER = "sentinel_sent"
#: upper bounds (seconds) of the schedule-to-start histogram; the last bucket is +Inf
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
MINUTE_TTL_S = 900
FLUSH_INTERVAL_S = 1.0


def bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def bucket_index(seconds: float) -> int:
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return i
    return len(BUCKETS)


class StatsBuffer:
    """Per-process counters, flushed to Redis by a daemon thread; safe across fork."""

    def __init__(self, interval: float = FLUSH_INTERVAL_S):
        self.interval = interval
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._latency: dict[str, list[float]] = {}  # queue -> [bucket counts..., sum]
        self._outcomes: Counter = Counter()
        self._minute_outcomes: dict[int, Counter] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's buffer and thread are not ours
            self._reset()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sentinel-taskstats", daemon=True)
            self._thread.start()

    def observe_latency(self, queue: str, seconds: float) -> None:
        self._ensure_thread()
        with self._lock:
            row = self._latency.get(queue)
            if row is None:
                row = self._latency[queue] = [0] * (len(BUCKETS) + 1) + [0.0]
            row[bucket_index(seconds)] += 1
            row[-1] += seconds

    def count_outcome(self, state: str) -> None:
        self._ensure_thread()
        minute = int(time.time() // 60)
        with self._lock:
            self._outcomes[state] += 1
            self._minute_outcomes.setdefault(minute, Counter())[state] += 1

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except redis.RedisError as exc:
                logger.debug("sentinel: task stats flush failed: %s", exc)
            except Exception:  # never let the thread die
                logger.debug("sentinel: task stats flush error", exc_info=True)

    def flush(self, cfg: Config | None = None) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            latency, self._latency = self._latency, {}
            outcomes, self._outcomes = self._outcomes, Counter()
            minutes, self._minute_outcomes = self._minute_outcomes, {}
        if not latency and not outcomes:
            return
        cfg = cfg or get_config()
        ns = cfg.namespace
        pipe = get_redis(cfg.redis_url).pipeline(transaction=False)
        for queue, row in latency.items():
            key = f"{ns}metrics:s2s:{queue}"
            pipe.sadd(f"{ns}metrics:s2s:queues", queue)
            for i, n in enumerate(row[:-1]):
                if n:
                    pipe.hincrby(key, "le:" + bucket_label(BUCKETS[i] if i < len(BUCKETS) else float("inf")), n)
            pipe.hincrby(key, "count", sum(row[:-1]))
            pipe.hincrbyfloat(key, "sum", row[-1])
        for state, n in outcomes.items():
            pipe.hincrby(f"{ns}metrics:tasks", state, n)
        for minute, counts in minutes.items():
            key = f"{ns}metrics:tasks:m:{minute}"
            for state, n in counts.items():
                pipe.hincrby(key, state, n)
            pipe.expire(key, MINUTE_TTL_S)
        pipe.execute()


_buffer = StatsBuffer()


def buffer() -> StatsBuffer:
    return _buffer


def flush_quietly(**kwargs) -> None:
    """Flush this process's buffer, ignoring errors (at exit and at pool-child shutdown)."""
    try:
        _buffer.flush()
    except Exception:
        pass


atexit.register(flush_quietly)


# -- read side ---------------------------------------------------------------------------------------
def read_latency(client: redis.Redis, ns: str) -> dict[str, dict]:
    """queue -> {"buckets": [(bound, cumulative count)...], "count", "sum"} (bounds end with +Inf)."""
    queues = sorted(client.smembers(f"{ns}metrics:s2s:queues"))
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.hgetall(f"{ns}metrics:s2s:{q}")
    out = {}
    for q, raw in zip(queues, pipe.execute(), strict=True):
        cumulative, buckets = 0, []
        for bound in (*BUCKETS, float("inf")):
            cumulative += int(raw.get("le:" + bucket_label(bound), 0))
            buckets.append((bound, cumulative))
        out[q] = {"buckets": buckets, "count": int(raw.get("count", 0)), "sum": float(raw.get("sum", 0.0))}
    return out


def quantile(buckets: list[tuple[float, int]], q: float) -> float | None:
    """Estimate a quantile from cumulative buckets (linear within the bucket, as Prometheus does)."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            span = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / span if span else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def read_outcomes(client: redis.Redis, ns: str, window_minutes: int = 5) -> dict:
    """Totals per state, and per-minute rates over the last ``window_minutes`` complete minutes."""
    now_minute = int(time.time() // 60)
    minutes = list(range(now_minute - window_minutes, now_minute))
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(f"{ns}metrics:tasks")
    for m in minutes:
        pipe.hgetall(f"{ns}metrics:tasks:m:{m}")
    totals, *per_minute = pipe.execute()
    window: Counter = Counter()
    for counts in per_minute:
        window.update({k: int(v) for k, v in counts.items()})
    return {"totals": {k: int(v) for k, v in totals.items()},
            "per_minute": {k: round(v / window_minutes, 2) for k, v in window.items()},
            "window_minutes": window_minutes}
