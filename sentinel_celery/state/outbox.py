"""The GitHub outbox: events that should become visible in GitHub, appended from any process.

Nothing outside the mirror writer ever calls GitHub. Workers, pool children, the result backend, the
monitor and the alerting loop append *events* here; the mirror leader (``sentinel_celery.github.mirror``)
drains them every flush interval, coalesces them per GitHub object (latest state wins) and writes
what changed, within its rate budget.

Contract (stable; other modules rely on it):

``append(kind, key, state, *, final=False) -> str | None``
    One ``XADD`` (one round trip). ``kind`` names the family of GitHub object: ``worker``, ``task``,
    ``failover``, ``alert``, ``lease``, ``dashboard`` (others are accepted and kept, the mirror
    ignores kinds it does not know). ``key`` identifies the object within its kind (a worker id, a
    task id, an alert name, a failover event id). ``state`` is a JSON-serialisable dict: a *partial*
    state; the mirror merges successive states of one object (later keys override earlier ones).
    ``final=True`` marks the last state of an object (task finished, worker stopped or dead): final
    states are never dropped or folded away. Returns the stream id, or ``None`` if Redis failed —
    it never raises into the caller (it logs once in a while and counts in :data:`errors`).

``append(event_dict)``
    Also accepted: one dict with ``kind`` and ``key`` (or ``<kind>``/``name``/``id``) naming the
    object, the dict itself as the state; ``"op": "close"`` or ``"final": True`` marks it final.

``add_to_pipeline(pipe, kind, key, state, *, final=False, namespace=None)``
    The same event queued on a caller's redis-py pipeline, so that it costs no extra round trip
    (the result backend uses this next to its result write).

Bounds: the stream is capped at ``github.mirror.outboxMaxLen`` (approximate ``MAXLEN``). The mirror
drains it into its folded per-object table within one flush interval *whether or not GitHub is
reachable*, so the cap is only reached if no mirror runs at all; the folded table keeps the latest
state per object, counts what it folded, and never evicts a final state.

Redis keys (under the namespace):
  github:outbox      stream: fields k (kind), o (object key), s (state JSON), f ("1" if final),
                     t (appender's wall clock, ms, for lag measurement)
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Mapping

import redis

from sentinel_celery.config import Config, get_config
from sentinel_celery.state.connection import get_redis

logger = logging.getLogger(__name__)

KINDS = ("worker", "task", "failover", "alert", "lease", "dashboard")

#: appends that failed in this process (Redis errors); the caller never sees them
errors = 0
_last_error_log = 0.0


def outbox_key(namespace: str) -> str:
    return f"{namespace}github:outbox"


def _fields(kind: str, key: str, state: Mapping[str, Any], final: bool) -> dict:
    return {"k": kind, "o": str(key), "s": json.dumps(state, default=str, separators=(",", ":")),
            "f": "1" if final else "0", "t": int(time.time() * 1000)}


def _max_len(cfg: Config) -> int:
    return int(cfg.get("github.mirror.outboxMaxLen") or 100000)


def add_to_pipeline(pipe, kind: str, key: str, state: Mapping[str, Any], *, final: bool = False,
                    namespace: str | None = None, cfg: Config | None = None) -> None:
    """Queue the event on ``pipe`` (a redis-py pipeline); the caller executes it."""
    cfg = cfg or get_config()
    pipe.xadd(outbox_key(namespace or cfg.namespace), _fields(kind, key, state, final),
              maxlen=_max_len(cfg), approximate=True)


def append(kind: str | Mapping[str, Any], key: str | None = None, state: Mapping[str, Any] | None = None, *,
           final: bool = False, client: redis.Redis | None = None, cfg: Config | None = None) -> str | None:
    """Append one event; never raises (see the module docstring)."""
    global errors, _last_error_log
    try:
        if isinstance(kind, Mapping):
            kind, key, state, final = _from_dict(kind)
        cfg = cfg or get_config()
        client = client or get_redis(cfg.redis_url)
        return client.xadd(outbox_key(cfg.namespace), _fields(kind, key, state, final),
                           maxlen=_max_len(cfg), approximate=True)
    except Exception as exc:  # the hot path must not fail because the mirror's queue did
        errors += 1
        now = time.monotonic()
        if now - _last_error_log > 30:
            _last_error_log = now
            logger.warning("sentinel: could not append %s event for %s to the GitHub outbox (%d failed "
                           "so far in this process): %s", kind, key, errors, exc)
        return None


def _from_dict(event: Mapping[str, Any]) -> tuple[str, str, dict, bool]:
    """The one-argument form ``append({"kind": ..., "alert"|"key"|"name": ..., "op": ...})`` (alerts.py)."""
    kind = str(event.get("kind") or "event")
    key = event.get("key") or event.get(kind) or event.get("name") or event.get("id") or ""
    return kind, str(key), dict(event), bool(event.get("final")) or event.get("op") == "close"


def depth(client: redis.Redis | None = None, namespace: str | None = None) -> int:
    """Events appended and not yet drained by the mirror."""
    cfg = get_config()
    client = client or get_redis(cfg.redis_url)
    return int(client.xlen(outbox_key(namespace or cfg.namespace)))
