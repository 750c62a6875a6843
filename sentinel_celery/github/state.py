"""The mirror's own state in Redis: the folded outbox and what it has written to GitHub.

*Folding*: every flush the leader moves all events from the outbox stream into ``github:pending``,
one entry per object (``<kind>`` + key), merging successive states (latest wins; a task's final
state is never replaced by a late non-final one; failover history accumulates). Stream entries
are deleted in the same transaction that stores the fold, so nothing is lost or applied twice if
the leader dies. The fold happens whether or not GitHub answers, which is what keeps the outbox
bounded during an outage: storage is O(objects), not O(events). If the table grows past
``outboxMaxLen`` entries the oldest *non-final* entries are dropped (counted in ``dropped``);
final states are never dropped. An entry leaves the table when its writes succeeded (or GitHub
refused them for good, counted in ``rejected``).

Redis keys (under the namespace):
  github:pending   hash: "<kind>|<key>" -> JSON {kind, key, state, final, first, last, events}
                   (first/last: appenders' clocks in ms, for the lag)
  github:objects   hash: object id -> JSON of what is in GitHub for it (issue number, open,
                   comment id, digest of the last rendered content, label set, ...). The field
                   ``_epoch`` marks a warm cache: when it is missing (Redis was flushed) the
                   mirror first looks objects up in GitHub by label and hidden marker
  github:tasks     hash: task id -> JSON of a linked task's merged state as last mirrored
                   (finished tasks are forgotten after a day, see ``prune``; so are
                   ``commit:*`` objects)
  github:meta      hash: writer_token, epoch, leader, folded, dropped, rejected, written,
                   last_flush, last_flush_ms, lag_ms, last_error, sync_requested
  github:lag       list: recent lags in ms (time from an object's oldest unwritten event to its
                   write), newest first, capped at 1,000
  github:rejected  list: JSON of the last 100 writes GitHub refused for good
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterable

import redis

from sentinel_celery.state.outbox import outbox_key

TASK_FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
SEP = "|"
LAG_SAMPLES = 1000

_DELETE_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def merge_failovers(old: list | None, new: list | None) -> list:
    out = list(old or [])
    for item in new or []:
        same = [o for o in out if o.get("worker") == item.get("worker") and
                (o.get("event") == item.get("event") or not o.get("event") or not item.get("event"))]
        if same:
            same[0].update({k: v for k, v in item.items() if v is not None})
        else:
            out.append(dict(item))
    return out[-20:]


QUEUED_STATES = ("QUEUED", "PENDING", "RECEIVED")


def merge_task(prev: dict, new: dict) -> dict:
    """A task's state after ``new``: later keys win, finals stick, moves between workers are kept."""
    new = dict(new)
    prev_state, new_state = prev.get("state"), new.get("state")
    if prev_state in TASK_FINAL and new_state is not None and new_state not in TASK_FINAL:
        for key in ("state", "worker", "at", "started_at"):
            new.pop(key, None)  # a late "started" or "queued" must not reopen a finished task
    failovers = merge_failovers(prev.get("failovers"), new.pop("failovers", None))
    if (prev_state == "STARTED" and new_state == "STARTED" and prev.get("worker") and new.get("worker")
            and prev["worker"] != new["worker"]):
        failovers = merge_failovers(failovers, [{"worker": prev["worker"], "to": new["worker"],
                                                 "at": new.get("at")}])
    merged = {**prev, **new}
    if failovers:
        merged["failovers"] = failovers
    # when the task was first seen queued and first started: later events overwrite ``at``, and an
    # issue's summary needs to know which runs overlapped and which came after another had finished
    if new.get("at") is not None:
        if new_state in QUEUED_STATES and not prev.get("queued_at"):
            merged["queued_at"] = new["at"]
        if new_state == "STARTED" and not prev.get("started_at"):
            merged["started_at"] = new["at"]
    return merged


def merge(kind: str, prev: dict, new: dict) -> dict:
    if kind == "task":
        return merge_task(prev, new)
    return {**prev, **new}


@dataclass
class Pending:
    field: str
    raw: str
    kind: str
    key: str
    state: dict
    final: bool
    first: int
    last: int
    events: int

    @classmethod
    def parse(cls, field: str, raw: str) -> "Pending":
        d = json.loads(raw)
        return cls(field, raw, d["kind"], d["key"], d["state"], d["final"], d["first"], d["last"], d["events"])


class MirrorState:
    def __init__(self, client: redis.Redis, namespace: str, max_pending: int = 100000):
        self.client = client
        self.ns = namespace
        self.max_pending = max_pending
        self._delete_if_same = client.register_script(_DELETE_IF_SAME)

    def key(self, name: str) -> str:
        return f"{self.ns}github:{name}"

    @property
    def stream(self) -> str:
        return outbox_key(self.ns)

    # -- folding -----------------------------------------------------------------------------
    def drain(self, batch: int = 2000, max_events: int = 50000) -> int:
        """Fold the outbox stream into the pending table; returns the number of events folded."""
        total = 0
        while total < max_events:
            entries = self.client.xrange(self.stream, "-", "+", count=batch)
            if not entries:
                break
            self._fold(entries)
            total += len(entries)
            if len(entries) < batch:
                break
        if total:
            self._bound()
        return total

    def _fold(self, entries: list) -> None:
        events = []
        for entry_id, f in entries:
            try:
                events.append((entry_id, f["k"], f["o"], json.loads(f.get("s") or "{}"), f.get("f") == "1",
                               int(f.get("t") or 0)))
            except (KeyError, ValueError):
                events.append((entry_id, None, None, None, False, 0))  # malformed: just delete it
        fields = sorted({f"{k}{SEP}{o}" for _, k, o, *_ in events if k})
        recovered_tasks = {t.get("id") for _, k, _, s, *_ in events if k == "failover"
                           for t in (s.get("tasks_recovered") or []) if isinstance(t, dict) and t.get("id")}
        task_fields = [f"task{SEP}{tid}" for tid in sorted(recovered_tasks)]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.key("pending"), fields or ["-"])
        pipe.hmget(self.key("pending"), task_fields or ["-"])
        pipe.hmget(self.key("tasks"), sorted(recovered_tasks) or ["-"])
        current, pending_tasks, known_tasks = pipe.execute()
        table: dict[str, dict] = {f: json.loads(raw) for f, raw in zip(fields, current, strict=False) if raw}  # empty fields read "-"
        linked = {tid for tid, p, k in zip(sorted(recovered_tasks), pending_tasks, known_tasks, strict=False) if p or k}
        folded = 0
        for _, kind, key, state, final, t in events:
            if kind is None:
                continue
            self._fold_one(table, kind, key, state, final, t)
            folded += 1
            if kind == "failover":
                for task in state.get("tasks_recovered") or []:
                    tid = task.get("id") if isinstance(task, dict) else None
                    if tid in linked or f"task{SEP}{tid}" in table:
                        self._fold_one(table, "task", tid, {"failovers": [
                            {"worker": state.get("worker"), "at": state.get("detected_at"),
                             "event": state.get("id"), "was_running": task.get("was_running")}]}, False, t)
        pipe = self.client.pipeline(transaction=True)
        if table:
            pipe.hset(self.key("pending"), mapping={f: json.dumps(v, separators=(",", ":")) for f, v in table.items()})
        pipe.xdel(self.stream, *[e[0] for e in events])
        pipe.hincrby(self.key("meta"), "folded", folded)
        pipe.execute()

    @staticmethod
    def _fold_one(table: dict, kind: str, key: str, state: dict, final: bool, t: int) -> None:
        field = f"{kind}{SEP}{key}"
        entry = table.get(field)
        if entry is None:
            entry = table[field] = {"kind": kind, "key": key, "state": {}, "final": False, "first": t or 0,
                                    "last": t or 0, "events": 0}
        entry["state"] = merge(kind, entry["state"], state)
        entry["final"] = entry["final"] or final
        entry["last"] = max(entry["last"], t or 0)
        entry["first"] = min(entry["first"] or t, t or entry["first"])
        entry["events"] += 1

    def _bound(self) -> None:
        size = self.client.hlen(self.key("pending"))
        if size <= self.max_pending:
            return
        entries = [Pending.parse(f, raw) for f, raw in self.client.hgetall(self.key("pending")).items()]
        droppable = sorted((p for p in entries if not p.final), key=lambda p: p.last)
        victims = droppable[:size - self.max_pending]
        if victims:
            pipe = self.client.pipeline(transaction=False)
            pipe.hdel(self.key("pending"), *[p.field for p in victims])
            pipe.hincrby(self.key("meta"), "dropped", len(victims))
            pipe.execute()

    def pending(self) -> list[Pending]:
        return [Pending.parse(f, raw) for f, raw in self.client.hgetall(self.key("pending")).items()]

    def done(self, entries: Iterable[Pending], *, written_at_ms: dict[str, int] | None = None) -> None:
        """Remove entries whose writes succeeded (only if nothing was folded into them since).

        ``written_at_ms`` (per entry field): when its last write finished, for the lag; default now.
        """
        entries = list(entries)
        if not entries:
            return
        now = int(time.time() * 1000)
        written_at_ms = written_at_ms or {}
        lags = [max(written_at_ms.get(p.field, now) - p.first, 0) for p in entries if p.first]
        for p in entries:
            self._delete_if_same(keys=[self.key("pending")], args=[p.field, p.raw])
        if lags:
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.key("lag"), *lags)
            pipe.ltrim(self.key("lag"), 0, LAG_SAMPLES - 1)
            pipe.hset(self.key("meta"), "lag_ms", max(lags))
            pipe.execute()

    def reject(self, entries: Iterable[Pending], reason: str) -> None:
        entries = list(entries)
        pipe = self.client.pipeline(transaction=False)
        for p in entries:
            pipe.lpush(self.key("rejected"), json.dumps({"kind": p.kind, "key": p.key, "reason": reason[:300],
                                                         "at": int(time.time() * 1000)}))
        pipe.ltrim(self.key("rejected"), 0, 99)
        pipe.hincrby(self.key("meta"), "rejected", len(entries))
        pipe.execute()
        self.done(entries)

    def oldest_pending_ms(self) -> int | None:
        firsts = [p.first for p in self.pending() if p.first]
        return min(firsts) if firsts else None

    # -- objects in GitHub -------------------------------------------------------------------
    def objects(self, ids: Iterable[str]) -> dict[str, dict]:
        ids = list(ids)
        if not ids:
            return {}
        return {i: json.loads(raw) for i, raw in zip(ids, self.client.hmget(self.key("objects"), ids), strict=True) if raw}

    def object(self, obj_id: str) -> dict | None:
        raw = self.client.hget(self.key("objects"), obj_id)
        return json.loads(raw) if raw else None

    def put_object(self, obj_id: str, data: dict) -> None:
        self.client.hset(self.key("objects"), obj_id, json.dumps(data, separators=(",", ":")))

    def all_objects(self, prefix: str) -> dict[str, dict]:
        out = {}
        for k, raw in self.client.hscan_iter(self.key("objects"), match=f"{prefix}*", count=500):
            out[k] = json.loads(raw)
        return out

    def warm(self) -> bool:
        return bool(self.client.hexists(self.key("objects"), "_epoch"))

    def mark_warm(self) -> None:
        self.client.hset(self.key("objects"), "_epoch", int(time.time()))

    # -- linked tasks ------------------------------------------------------------------------
    def tasks(self, ids: Iterable[str]) -> dict[str, dict]:
        ids = list(ids)
        if not ids:
            return {}
        return {i: json.loads(raw) for i, raw in zip(ids, self.client.hmget(self.key("tasks"), ids), strict=True) if raw}

    def put_tasks(self, states: dict[str, dict]) -> None:
        if states:
            self.client.hset(self.key("tasks"), mapping={k: json.dumps(v, separators=(",", ":"), default=str)
                                                         for k, v in states.items()})

    def prune(self, older_than_s: int = 24 * 3600) -> int:
        """Forget finished tasks and commit statuses older than a day (both grow with the work done)."""
        cut = time.time() - older_than_s
        stale_tasks = [k for k, raw in self.client.hscan_iter(self.key("tasks"), count=1000)
                       if (lambda d: d.get("state") in TASK_FINAL and int(d.get("at") or 0) / 1000 < cut)(
                           json.loads(raw))]
        stale_commits = [k for k, raw in self.client.hscan_iter(self.key("objects"), match="commit:*", count=1000)
                         if float(json.loads(raw).get("at") or 0) < cut]
        if stale_tasks:
            self.client.hdel(self.key("tasks"), *stale_tasks)
        if stale_commits:
            self.client.hdel(self.key("objects"), *stale_commits)
        return len(stale_tasks) + len(stale_commits)

    # -- meta --------------------------------------------------------------------------------
    def meta(self) -> dict:
        return self.client.hgetall(self.key("meta"))

    def set_meta(self, **fields: Any) -> None:
        self.client.hset(self.key("meta"), mapping={k: "" if v is None else v for k, v in fields.items()})

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.client.hincrby(self.key("meta"), name, n)

    def lags(self) -> list[int]:
        return [int(x) for x in self.client.lrange(self.key("lag"), 0, LAG_SAMPLES - 1)]
