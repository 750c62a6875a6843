"""The cluster marker: how a Sentinel process tells that Redis came back empty.

The first process of a cluster writes an id to ``cluster:marker``; every worker remembers the id it saw.
Redis that restarts without persistence (or loses its data otherwise) comes back without it, so a worker
whose heartbeat is refused first checks the marker: if it is gone or different, this was not a failover,
Redis lost its data — queued tasks, results, leases and the registry with it. The first to notice writes
a new marker and a ``cluster:data-loss`` record, which makes ``sentinel cluster health`` critical and
raises the ``redis_data_loss`` alert until an operator clears it (``sentinel cluster clear-data-loss``).

Redis keys (under the namespace):
  cluster:marker      string: the id of the current incarnation of the cluster's data
  cluster:data-loss   string: JSON {detected_at, restarted_at (ms), by, lost_marker, marker}; no expiry
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import redis

from sentinel_celery.state.connection import server_time_ms

# KEYS: marker, data-loss record; ARGV: the id the caller knows, a new id, who, Redis' start time (ms).
# Returns the current id; writes the record only for the first caller to find the known id gone.
_CHECK = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return cur end
if not cur then
  redis.call('SET', KEYS[1], ARGV[2])
  cur = ARGV[2]
end
local raw = redis.call('GET', KEYS[2])
if raw and cjson.decode(raw)['lost_marker'] == ARGV[1] then return cur end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[2], cjson.encode({detected_at = now, restarted_at = tonumber(ARGV[4]), by = ARGV[3],
                                         lost_marker = ARGV[1], marker = cur}))
return cur
"""


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DataLoss:
    """Redis lost its data: when it restarted, when it was noticed and by whom."""

    detected_at: int
    restarted_at: int
    by: str
    lost_marker: str = ""
    marker: str = ""

    @property
    def summary(self) -> str:
        return f"Redis lost its data (restarted empty at {iso_ms(self.restarted_at)}); queued tasks may be lost"


class ClusterMarker:
    """One process's view of ``cluster:marker``."""

    def __init__(self, client: redis.Redis, namespace: str):
        self.client = client
        self.ns = namespace
        self.known: str | None = None
        self._check = client.register_script(_CHECK)

    @property
    def key(self) -> str:
        return f"{self.ns}cluster:marker"

    @property
    def loss_key(self) -> str:
        return f"{self.ns}cluster:data-loss"

    def ensure(self) -> str:
        """Write the marker if the cluster has none yet; remember the one in force."""
        self.client.set(self.key, uuid.uuid4().hex, nx=True)
        self.known = self.client.get(self.key)
        return self.known

    def lost(self, by: str) -> DataLoss | None:
        """The data loss since this process last saw the marker, or None if the marker is still the same."""
        if self.known is None:
            self.ensure()
            return None
        started = server_time_ms(self.client) - int(self.client.info("server").get("uptime_in_seconds", 0)) * 1000
        current = self._check(keys=[self.key, self.loss_key], args=[self.known, uuid.uuid4().hex, by, started])
        if current == self.known:
            return None
        self.known = current
        return read_data_loss(self.client, self.ns) or DataLoss(detected_at=started, restarted_at=started, by=by)


def current_marker(client: redis.Redis, namespace: str) -> str | None:
    return client.get(f"{namespace}cluster:marker")


def read_data_loss(client: redis.Redis, namespace: str) -> DataLoss | None:
    raw = client.get(f"{namespace}cluster:data-loss")
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return DataLoss(int(data["detected_at"]), int(data["restarted_at"]), str(data.get("by", "")),
                        str(data.get("lost_marker", "")), str(data.get("marker", "")))
    except (ValueError, KeyError, TypeError):
        return DataLoss(0, 0, "unreadable record")


def clear_data_loss(client: redis.Redis, namespace: str) -> DataLoss | None:
    """An operator has seen it: remove the record; returns what it said."""
    loss = read_data_loss(client, namespace)
    client.delete(f"{namespace}cluster:data-loss")
    return loss
