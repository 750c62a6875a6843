"""The record of failovers: pending recoveries, events, per-task counts, dead letters, totals.

Written by the failover monitor (cluster/failover.py); read by the CLI, metrics, alerts and the
GitHub dashboard, which need none of the monitor's machinery to do so.

Redis keys (under the namespace):
  failover:pending          hash: instance -> JSON of a declared-dead incarnation not yet recovered
  failover:events           list: JSON failover events, newest first, capped at EVENTS_MAX
  failover:task:<task id>   hash: recovered (times given back), killed (times it was running on a
                            worker that died); expires after failover.visibilityTimeoutSeconds
  failover:dead             hash: delivery tag -> JSON dead letter (task, worker, reason, message)
  failover:stats            hash: failovers, recovered_tasks, dead_lettered (totals)
"""
from __future__ import annotations

import json

import redis

from sentinel_celery.config import Config
from sentinel_celery.state.replication import replicated

EVENTS_MAX = 1000


class FailoverRecords:
    """The ``failover:*`` keys of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str):
        self.client = client
        self.ns = namespace

    @property
    def pending_key(self) -> str:
        return f"{self.ns}failover:pending"

    @property
    def events_key(self) -> str:
        return f"{self.ns}failover:events"

    @property
    def stats_key(self) -> str:
        return f"{self.ns}failover:stats"

    @property
    def dead_key(self) -> str:
        return f"{self.ns}failover:dead"

    def task_key(self, task_id: str) -> str:
        return f"{self.ns}failover:task:{task_id}"

    def record(self, event: dict) -> None:
        """Store one failover event and add it to the totals."""
        def write(pipe) -> None:
            pipe.lpush(self.events_key, json.dumps(event))
            pipe.ltrim(self.events_key, 0, EVENTS_MAX - 1)
            pipe.hincrby(self.stats_key, "failovers", 1)
            pipe.hincrby(self.stats_key, "recovered_tasks", len(event["tasks_recovered"]))
            pipe.hincrby(self.stats_key, "dead_lettered", len(event["dead_lettered"]))
        replicated(self.client, write, f"failover record of {event.get('worker', 'a worker')}")

    def task_counts(self, task_id: str | None) -> dict[str, int]:
        if not task_id:
            return {"recovered": 0, "killed": 0}
        recovered, killed = self.client.hmget(self.task_key(task_id), "recovered", "killed")
        return {"recovered": int(recovered or 0), "killed": int(killed or 0)}

    def count_recovery(self, task_id: str | None, *, killed: bool, ttl_s: int) -> None:
        if not task_id:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.task_key(task_id), "recovered", 1)
        if killed:
            pipe.hincrby(self.task_key(task_id), "killed", 1)
        pipe.expire(self.task_key(task_id), ttl_s)
        pipe.execute()

    def add_dead_letter(self, letter: dict, *, ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.dead_key, letter["tag"], json.dumps(letter))
        if letter.get("id"):
            pipe.hincrby(self.task_key(letter["id"]), "killed", 1)
            pipe.expire(self.task_key(letter["id"]), ttl_s)
        pipe.execute()


def read_events(client: redis.Redis, namespace: str, limit: int = 50) -> list[dict]:
    """Failover events, newest first (for the CLI and the GitHub mirror)."""
    return [json.loads(raw) for raw in client.lrange(FailoverRecords(client, namespace).events_key,
                                                     0, max(limit, 1) - 1)]


def read_dead_letters(client: redis.Redis, namespace: str) -> list[dict]:
    """Dead letters, newest first."""
    letters = [json.loads(raw) for raw in client.hvals(FailoverRecords(client, namespace).dead_key)]
    return sorted(letters, key=lambda d: d.get("at") or 0, reverse=True)


def failover_summary(cfg: Config, client: redis.Redis) -> dict:
    records = FailoverRecords(client, cfg.namespace)
    stats = client.hgetall(records.stats_key)
    last = read_events(client, cfg.namespace, 1)
    return {"failovers": int(stats.get("failovers", 0)), "recovered_tasks": int(stats.get("recovered_tasks", 0)),
            "dead_lettered": int(stats.get("dead_lettered", 0)),
            "pending": int(client.hlen(records.pending_key)),
            "last": last[0] if last else None}
