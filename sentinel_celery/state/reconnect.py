"""Silence nobody could have heard: when this process's Redis answered again after it could not be reached.

While Redis is down (restarted, failed over, cut off) no worker can beat, and neither can a monitor hear a
beat. Once it answers again every worker needs time to beat before its silence means anything, and its
Celery consumer needs time to reconnect before it can answer a ping. :class:`ReconnectGrace` keeps what a
monitor needs for that: the server time at which Redis answered again after a failed round of this process
(or Redis' own start, from ``INFO`` uptime, for a restart this process did not see), and how long the
outage lasted.

Redis keys: none.
"""
from __future__ import annotations

import logging
import time

import redis

from sentinel_celery.state.connection import server_time_ms

logger = logging.getLogger(__name__)

#: the longest a Celery consumer waits between reconnection attempts (kombu's ``interval_max``)
CONSUMER_RETRY_MAX_MS = 30_000


class ReconnectGrace:
    """See the module docstring. ``failed()`` after a round that could not reach Redis, ``answered()`` at the
    start of every round."""

    def __init__(self, client: redis.Redis, stale_ms: int):
        self.client = client
        self.stale_ms = stale_ms
        self.back_at_ms = 0
        self.outage_ms = 0
        self._down_since: float | None = None

    def failed(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()

    def answered(self) -> None:
        """Redis answers this round; if the last one failed, the grace starts now."""
        if self._down_since is None:
            return
        self.back_at_ms = server_time_ms(self.client)
        self.outage_ms = int((time.monotonic() - self._down_since) * 1000)
        self._down_since = None
        logger.warning("sentinel: Redis answers again after about %.1fs; no worker is declared dead for the next "
                       "%.1fs (silence counts from now)", self.outage_ms / 1000, self.stale_ms / 1000)

    def redis_started_ms(self, now_ms: int) -> int:
        return now_ms - int(self.client.info("server").get("uptime_in_seconds", 0)) * 1000

    def started_ms(self, now_ms: int) -> int:
        """When silence starts to count: Redis answered again, or started."""
        return max(self.back_at_ms, self.redis_started_ms(now_ms))

    def covers(self, now_ms: int) -> bool:
        """No silence is long enough yet to mean anything."""
        return now_ms - self.started_ms(now_ms) < self.stale_ms

    def consumers_may_be_reconnecting(self, now_ms: int) -> bool:
        """A worker's consumer may still be between reconnection attempts, so a missing ping answer proves
        nothing yet: its waits grow with the outage, up to kombu's longest."""
        since = now_ms - self.started_ms(now_ms)
        return since < self.stale_ms + min(max(self.outage_ms, self.stale_ms), CONSUMER_RETRY_MAX_MS)
