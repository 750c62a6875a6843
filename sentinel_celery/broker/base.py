"""``Broker``: the one interface the cluster, CLI and ops layers use to read and move a broker's messages.

Sentinel's own state lives in Redis whatever the broker is; this interface is what differs between
brokers (modelled on dramatiq's single ``Broker`` with one module per broker behind it):

* waiting messages — :meth:`Broker.depths`, :meth:`Broker.queue_stats` (length and the age of the
  message a consumer would take next), :meth:`Broker.oldest` / :meth:`Broker.move_oldest` (the
  coordinator's compare-and-move) and :meth:`Broker.move_all` (rebalance, drain, failover);
* messages a worker has taken and not yet acknowledged, by delivery tag — :meth:`Broker.get_many`,
  :meth:`Broker.exists` (a returning zombie's fencing check), :meth:`Broker.restore` (give back under a
  new tag), :meth:`Broker.remove` (dead letter), :meth:`Broker.tag_of` (a request's tag as the broker
  knows it);
* :meth:`Broker.release`: make the broker give back at once what a worker declared dead still holds
  (a no-op where Sentinel restores them itself).

Implementations: broker/redis_broker.py (kombu's Redis transport), broker/amqp_broker.py (RabbitMQ).
broker/factory.py picks one from the app's ``broker_url``.

Redis keys: none of its own.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sentinel_celery.state.taskstats import SENT_HEADER


@dataclass
class Waiting:
    """One waiting message, as read (not yet taken).

    ``key`` and ``raw`` say where it is and what it looked like, in the broker's own terms (a Redis
    list key and the exact payload; an AMQP queue name and the body); only the broker that read it
    interprets them, to take exactly this message.
    """

    key: str
    raw: Any
    message: dict

    @property
    def task_id(self) -> str | None:
        return (self.message.get("headers") or {}).get("id")

    @property
    def task_name(self) -> str | None:
        return (self.message.get("headers") or {}).get("task")

    @property
    def properties(self) -> dict:
        return self.message.get("properties") or {}


@dataclass
class Unacked:
    """One message a worker has taken and not yet acknowledged."""

    tag: str
    message: dict
    exchange: str
    routing_key: str
    delivered_at: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def headers(self) -> dict:
        return self.message.get("headers") or {}

    @property
    def task_id(self) -> str | None:
        return self.headers.get("id")

    @property
    def task_name(self) -> str | None:
        return self.headers.get("task")

    @property
    def eta(self) -> str | None:
        return self.headers.get("eta")


class Broker(ABC):
    """One Celery app's broker, as Sentinel reads and moves its messages."""

    #: what the broker does itself when a worker's connection closes
    requeues_on_disconnect: bool = False

    # -- waiting messages ------------------------------------------------------------------------
    @abstractmethod
    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Waiting messages per queue (0 for a queue that does not exist)."""

    @abstractmethod
    def queue_stats(self, queues: Iterable[str], now: float) -> dict[str, dict]:
        """Per queue: ``{"length": n, "oldest_age_seconds": s | None}`` (age of the next message)."""

    @abstractmethod
    def oldest(self, queue: str) -> Waiting | None:
        """The message a consumer of ``queue`` would take next, without taking it."""

    @abstractmethod
    def move_oldest(self, waiting: Waiting, destination: str, *, home: str, at: str = "tail") -> bool:
        """Move ``waiting`` (read by :meth:`oldest`) to ``destination``; False if someone took it first."""

    def put_back(self, waiting: Waiting) -> None:
        """``waiting`` (read by :meth:`oldest`) is not moved after all: leave it first in line.
        Nothing to do where reading does not take the message (Redis)."""
        return None

    @abstractmethod
    def move_all(self, source: str, destination: str | Callable[[dict], str], *,
                 limit: int | None = None) -> list[tuple[Waiting, str]]:
        """Move up to ``limit`` waiting messages of ``source`` to their destination (a queue name, or a
        function of the decoded message), which also becomes their home, ahead of what waits there.
        Returns (message as it was, destination) per moved message."""

    # -- messages taken and not acknowledged -----------------------------------------------------
    @abstractmethod
    def get_many(self, tags: Iterable[str]) -> dict[str, Unacked]:
        """The given delivery tags that are still unacknowledged."""

    @abstractmethod
    def exists(self, tag: str) -> bool:
        """Whether ``tag`` is still unacknowledged (held by the worker it was delivered to)."""

    @abstractmethod
    def restore(self, tag: str, *, headers: dict | None = None) -> tuple[Unacked, list[str]] | None:
        """Give the message back at the head of its queue(s) under a new tag; (message, queues) or
        None if it is no longer held (acked, or restored by someone else first)."""

    @abstractmethod
    def remove(self, tag: str) -> Unacked | None:
        """Take the message out of circulation (dead letter); None if it is no longer held."""

    def still_held(self, tags: Iterable[str]) -> set[str]:
        """Those of ``tags`` still unacknowledged."""
        return set(self.get_many(tags))

    def put_back_taken(self, message: Unacked) -> list[str]:
        """A message a consumer took off its queue whose unacknowledged record was never written (the
        connection broke in between): back to the head of its queue(s), unless it was recorded after all.
        Returns the queues. Nothing to do where the broker itself keeps what it delivered (AMQP)."""
        return []

    def tag_of(self, request) -> str | None:
        """The delivery tag under which the broker knows a Celery request's message."""
        props = getattr(request, "properties", None) or {}
        tag = props.get("delivery_tag")
        return str(tag) if tag is not None else None

    def release(self, worker: dict) -> int | None:
        """Make the broker give back at once what a dead ``worker`` (its registry fields: worker_id,
        hostname, pid) still holds; returns how many connections were closed, None if the broker
        needs nothing of the kind (or cannot be asked)."""
        return None

    # -- lifetime --------------------------------------------------------------------------------
    @abstractmethod
    def disconnect(self) -> None:
        """Drop connections (after a fork, or when done); the next call reconnects."""

    def close(self) -> None:
        self.disconnect()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def message_age(message: dict | str | bytes, now: float) -> float | None:
    """Seconds since the message was published (its ``sentinel_sent`` stamp); None if unstamped."""
    try:
        if isinstance(message, (str, bytes)):
            message = json.loads(message)
        headers = message.get("headers") or {}
        sent = headers.get(SENT_HEADER)
        return round(max(now - float(sent), 0.0), 3) if sent else None
    except (ValueError, TypeError, AttributeError):
        return None
