"""The broker's Redis lists as Sentinel touches them: names, depth, and moving one waiting message.

Celery's Redis transport keeps each queue as a list (``LPUSH`` to publish, ``BRPOP`` to consume, so
the right end is the head) plus one list per priority step (``<queue>\\x06\\x16<step>``), all
under the broker's ``global_keyprefix``. A message carries ``delivery_info`` (exchange, routing
key): that is where kombu restores it if the worker holding it dies, and where Celery re-sends it
on ``retry``. So when Sentinel moves a message, it rewrites ``delivery_info`` to the message's
*home* (its type queue, or its coordinator queue) — a message restored or retried later goes back
into circulation, never to a worker that may be gone.

A move is a compare-and-move in one Lua script: the message is taken only if it is still the one we
read, so a worker consuming the same list concurrently can never get it as well (no duplicate), and
the push happens in the same script as the pop (no loss).

Redis keys: the broker's own queue lists, nothing of Sentinel's.
"""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Callable, Iterable

import redis

from sentinel_celery.broker.base import Waiting, message_age
from sentinel_celery.config import Config
from sentinel_celery.redis_url import redis_url_of_broker
from sentinel_celery.routing import HOME_PROPERTY
from sentinel_celery.state.connection import get_redis

PRIORITY_SEP = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)

_MOVE = """
local index = 0
if ARGV[3] == 'oldest' then index = -1 end
if redis.call('LINDEX', KEYS[1], index) ~= ARGV[1] then
  return 0
end
if index == 0 then redis.call('LPOP', KEYS[1]) else redis.call('RPOP', KEYS[1]) end
if ARGV[4] == 'head' then redis.call('RPUSH', KEYS[2], ARGV[2]) else redis.call('LPUSH', KEYS[2], ARGV[2]) end
return 1
"""


class BrokerQueues:
    """Read and move waiting messages of one Celery app's Redis broker."""

    def __init__(self, app, client: redis.Redis | None = None):
        conf = app.conf
        opts = conf.broker_transport_options or {}
        self.prefix = opts.get("global_keyprefix", "") or ""
        self.steps = tuple(opts.get("priority_steps") or DEFAULT_PRIORITY_STEPS)
        self.client = client or get_redis(redis_url_of_broker(conf.broker_url, opts))
        self._move = self.client.register_script(_MOVE)

    @classmethod
    def for_config(cls, cfg: Config, client: redis.Redis | None = None) -> "BrokerQueues":
        """The broker ``install()`` gives an app of ``cfg``, without building the app."""
        prefix = cfg.get("redis.brokerKeyPrefix")
        conf = SimpleNamespace(broker_transport_options={"global_keyprefix": prefix} if prefix else {},
                               broker_url=cfg.broker_url)
        return cls(SimpleNamespace(conf=conf), client=client)

    def lists(self, queue: str) -> list[tuple[int, str]]:
        """(priority step, Redis key) of every list of ``queue``, in the order consumers read them."""
        return [(step, self.prefix + (f"{queue}{PRIORITY_SEP}{step}" if step else queue))
                for step in self.steps]

    def depth(self, queue: str) -> int:
        return self.depths([queue])[queue]

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Waiting messages per queue, in one round trip."""
        queues = list(queues)
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            for _, key in self.lists(q):
                pipe.llen(key)
        sizes = pipe.execute()
        n = len(self.steps)
        return {q: sum(sizes[i * n:(i + 1) * n]) for i, q in enumerate(queues)}

    def queue_stats(self, queues: Iterable[str], now: float) -> dict[str, dict]:
        """Length and age of the next-to-be-consumed message of every queue, in one round trip."""
        queues = list(queues)
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            for _, key in self.lists(q):
                pipe.llen(key)
                pipe.lindex(key, -1)
        res = pipe.execute()
        out, i = {}, 0
        for q in queues:
            length, oldest_age = 0, None
            for _ in self.lists(q):
                n, raw = res[i], res[i + 1]
                i += 2
                length += n
                if raw is not None and oldest_age is None:
                    oldest_age = message_age(raw, now)
            out[q] = {"length": length, "oldest_age_seconds": oldest_age}
        return out

    def peek(self, queue: str, limit: int = 100) -> list[Waiting]:
        """Up to ``limit`` waiting messages, next-to-be-consumed first."""
        out: list[Waiting] = []
        for _, key in self.lists(queue):
            for raw in reversed(self.client.lrange(key, -limit, -1)):
                out.append(Waiting(key, raw, json.loads(raw)))
        return out[:limit]

    def oldest(self, queue: str) -> Waiting | None:
        """The message a consumer of ``queue`` would take next, without taking it."""
        for _, key in self.lists(queue):
            raw = self.client.lindex(key, -1)
            if raw is not None:
                return Waiting(key, raw, json.loads(raw))
        return None

    def move_oldest(self, waiting: Waiting, destination: str, *, home: str, at: str = "tail") -> bool:
        """Move ``waiting`` (read by :meth:`oldest`) to ``destination``; False if someone took it first."""
        return self._move_one(waiting.key, self._key_for(destination, waiting.key), waiting.raw, home,
                              "oldest", at)

    def move_all(self, source: str, destination: str | Callable[[dict], str], *,
                 limit: int | None = None) -> list[tuple[Waiting, str]]:
        """Move up to ``limit`` waiting messages of ``source``, newest first, to the head of their
        destination (a queue name, or a function of the decoded message), which also becomes
        their home. Returns (message as it was, destination) per moved message.

        Newest-first moves pushed at the head keep the moved messages in their order and put them
        before what is already waiting there: they were scheduled earlier and waited on a worker
        that could not take them.
        """
        moved: list[tuple[Waiting, str]] = []
        for _, src_key in self.lists(source):
            while limit is None or len(moved) < limit:
                raw = self.client.lindex(src_key, 0)
                if raw is None:
                    break
                message = json.loads(raw)
                dest = destination(message) if callable(destination) else destination
                if self._move_one(src_key, self._key_for(dest, src_key), raw, dest, "newest", "head"):
                    moved.append((Waiting(src_key, raw, message), dest))
                # else a consumer took it meanwhile: read the end again
        return moved

    def _key_for(self, queue: str, like_key: str) -> str:
        step = int(like_key.rsplit(PRIORITY_SEP, 1)[1]) if PRIORITY_SEP in like_key else 0
        return dict(self.lists(queue))[step]

    def _move_one(self, src_key: str, dst_key: str, raw: str, home: str, end: str, at: str) -> bool:
        rewritten = rewrite_home(raw, home)
        return bool(self._move(keys=[src_key, dst_key], args=[raw, rewritten, end, at]))


def rewrite_home(raw: str, home: str) -> str:
    """The payload with ``delivery_info`` pointing at ``home`` through the anonymous exchange."""
    message = json.loads(raw)
    props = message.setdefault("properties", {})
    info = props.setdefault("delivery_info", {})
    info["exchange"] = ""
    info["routing_key"] = home
    props[HOME_PROPERTY] = home
    return json.dumps(message)
