"""Webhook deliveries: POSTing events to the URLs a repository's hooks name, as GitHub does.

Owns :class:`Hook` (a URL, an optional secret, the repositories and events it wants),
:class:`Delivery` (one event sent to one hook, with its attempts) and :class:`Webhooks`, the
registry and the sender thread. A delivery is a ``POST`` with GitHub's headers:

  ``X-GitHub-Event``           the event name (``issues``, ``issue_comment``, ``label``, ``push``)
  ``X-GitHub-Delivery``        a GUID, the same on every attempt and redelivery
  ``X-GitHub-Hook-ID``, ``X-GitHub-Hook-Installation-Target-Type/-ID``
  ``X-Hub-Signature-256``      ``sha256=`` + HMAC-SHA256 of the raw body with the hook's secret
  ``X-Hub-Signature``          ``sha1=`` + HMAC-SHA1 (GitHub still sends both); neither without a secret
  ``User-Agent``               ``GitHub-Hookshot/<hex>``
  ``Content-Type``             ``application/json``

An answer outside 2xx, or none within :data:`DELIVERY_TIMEOUT` seconds, is a failed attempt; it
is tried again after :data:`RETRY_DELAYS` (GitHub itself does not retry on its own, but its
senders are expected to survive a receiver's restart, and the hub's tests need that). A
redelivery (``POST /_hub/webhooks/deliveries/{id}/attempts``, like GitHub's "Redeliver") sends
the same body and GUID again.

Events raised inside a request are held by :meth:`Webhooks.batch` until the request's
transaction committed, so a receiver that reads the API back sees the change; a request that
failed delivers nothing.

Nothing here knows HTTP requests or the store: payloads are built by :mod:`.events`.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import http.client
import json
import logging
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)

EVENTS = ("issues", "issue_comment", "label", "push")
USER_AGENT = "GitHub-Hookshot/5a7c9e1"
DELIVERY_TIMEOUT = 10.0  # GitHub gives a receiver 10 seconds
RETRY_DELAYS = (0.5, 2.0, 5.0)  # after the 1st, 2nd and 3rd failed attempt; then the delivery stays failed
MAX_DELIVERIES = 10_000  # kept for the admin listing, oldest dropped first


def signature_256(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Hook:
    id: int
    url: str
    secret: str | None = None
    repos: tuple[str, ...] | None = None  # None: every repository of the hub
    events: tuple[str, ...] = ("*",)

    def wants(self, repo: str, event: str) -> bool:
        if self.repos is not None and repo.lower() not in {r.lower() for r in self.repos}:
            return False
        return "*" in self.events or event in self.events

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "repos": list(self.repos) if self.repos is not None else None,
            "events": list(self.events),
            "has_secret": bool(self.secret),
        }

    @classmethod
    def from_dict(cls, hook_id: int, data: Any, where: str) -> "Hook":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a webhook must be an object with url, secret, repos, events")
        unknown = set(data) - {"url", "secret", "repos", "events"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        url = data.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: 'url' must be an http(s) URL, got {url!r}")
        secret = data.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise ValueError(f"{where}: 'secret' must be a string")
        repos = data.get("repos")
        if repos is not None and not (isinstance(repos, list) and all(isinstance(r, str) for r in repos)):
            raise ValueError(f"{where}: 'repos' must be a list of owner/name")
        events = data.get("events", ["*"])
        if not isinstance(events, list) or any(e != "*" and e not in EVENTS for e in events):
            raise ValueError(f"{where}: 'events' must list some of {', '.join(EVENTS)} (or '*'), got {events!r}")
        return cls(hook_id, url, secret or None, tuple(repos) if repos is not None else None, tuple(events))


@dataclass
class Delivery:
    id: int
    guid: str
    hook: Hook
    event: str
    action: str | None
    repo: str
    repo_id: int
    body: bytes
    redelivery: bool = False
    status_code: int | None = None  # of the last attempt; None while none answered
    error: str | None = None  # of the last attempt
    attempts: int = 0
    queued_at: float = field(default_factory=time.time)
    delivered_at: float | None = None  # when the last attempt ended
    duration: float | None = None  # of the last attempt, seconds
    done: bool = False  # delivered, or failed for good

    @property
    def status(self) -> str:
        if self.status_code is not None and 200 <= self.status_code < 300:
            return "OK"
        if not self.done:
            return "pending"
        return f"failed: {self.error or self.status_code}"

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Event": self.event,
            "X-GitHub-Delivery": self.guid,
            "X-GitHub-Hook-ID": str(self.hook.id),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-GitHub-Hook-Installation-Target-ID": str(self.repo_id),
        }
        if self.hook.secret:
            headers["X-Hub-Signature"] = "sha1=" + hmac.new(self.hook.secret.encode(), self.body, "sha1").hexdigest()
            headers["X-Hub-Signature-256"] = signature_256(self.hook.secret, self.body)
        return headers

    def as_json(self, *, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "guid": self.guid,
            "hook_id": self.hook.id,
            "url": self.hook.url,
            "event": self.event,
            "action": self.action,
            "repository": self.repo,
            "redelivery": self.redelivery,
            "status": self.status,
            "status_code": self.status_code,
            "attempts": self.attempts,
            "queued_at": self.queued_at,
            "delivered_at": self.delivered_at,
            "duration": self.duration,
        }
        if full:
            data["request"] = {"headers": self.headers(), "payload": json.loads(self.body)}
        return data


class Webhooks:
    """The hub's hooks and the thread that delivers their events."""

    def __init__(self, retry_delays: Iterable[float] = RETRY_DELAYS, timeout: float = DELIVERY_TIMEOUT) -> None:
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self._hooks: list[Hook] = []
        self._deliveries: dict[int, Delivery] = {}
        self._next_id = 1
        self._due: list[tuple[float, int, int]] = []  # (when, seq, delivery id)
        self._seq = 0
        self._cond = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._held = threading.local()

    # hooks ---------------------------------------------------------------
    def add(
        self,
        url: str,
        secret: str | None = None,
        *,
        repos: Iterable[str] | None = None,
        events: Iterable[str] | None = None,
    ) -> Hook:
        data: dict[str, Any] = {"url": url, "secret": secret}
        if repos is not None:
            data["repos"] = list(repos)
        if events is not None:
            data["events"] = list(events)
        with self._cond:
            hook = Hook.from_dict(len(self._hooks) + 1, data, "webhook")
            self._hooks.append(hook)
        return hook

    def add_from_dicts(self, entries: Any, where: str) -> list[Hook]:
        if not isinstance(entries, list):
            raise ValueError(f'{where}: expected {{"webhooks": [...]}} to be a list')
        hooks = []
        for index, entry in enumerate(entries):
            Hook.from_dict(0, entry, f"{where}: webhooks[{index}]")  # validate all before adding any
        for entry in entries:
            hooks.append(self.add(entry["url"], entry.get("secret"), repos=entry.get("repos"),
                                  events=entry.get("events")))
        return hooks

    def hooks(self) -> list[Hook]:
        with self._cond:
            return list(self._hooks)

    def wanted(self, repo: str, event: str) -> bool:
        """Whether any hook wants ``event`` of ``repo`` (payloads are built only then)."""
        return any(hook.wants(repo, event) for hook in self.hooks())

    # raising events ------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the events raised inside; queue them when the block ends without an exception."""
        held: list[tuple[str, int, str, dict[str, Any]]] = []
        self._held.events = held
        try:
            yield
        except BaseException:
            held.clear()
            raise
        finally:
            self._held.events = None
        for item in held:
            self._queue(*item)

    def emit(self, repo: str, repo_id: int, event: str, payload: dict[str, Any]) -> None:
        """Deliver ``payload`` as ``event`` to every hook that wants it (after the batch, if in one)."""
        held = getattr(self._held, "events", None)
        if held is not None:
            held.append((repo, repo_id, event, payload))
        else:
            self._queue(repo, repo_id, event, payload)

    def _queue(self, repo: str, repo_id: int, event: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        action = payload.get("action") if isinstance(payload.get("action"), str) else None
        for hook in self.hooks():
            if hook.wants(repo, event):
                self._enqueue(Delivery(0, str(uuid.uuid4()), hook, event, action, repo, repo_id, body))

    def redeliver(self, delivery_id: int) -> Delivery:
        """Send a past delivery again: same body, same GUID (GitHub's "Redeliver")."""
        with self._cond:
            old = self._deliveries.get(delivery_id)
        if old is None:
            raise KeyError(delivery_id)
        return self._enqueue(
            Delivery(0, old.guid, old.hook, old.event, old.action, old.repo, old.repo_id, old.body, redelivery=True)
        )

    def _enqueue(self, delivery: Delivery) -> Delivery:
        with self._cond:
            if self._closed:
                return delivery
            delivery.id = self._next_id
            self._next_id += 1
            self._deliveries[delivery.id] = delivery
            while len(self._deliveries) > MAX_DELIVERIES:
                self._deliveries.pop(next(iter(self._deliveries)))
            self._schedule(delivery.id, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sentinel-hub-webhooks", daemon=True)
                self._thread.start()
        return delivery

    def _schedule(self, delivery_id: int, when: float) -> None:
        self._seq += 1
        heapq.heappush(self._due, (when, self._seq, delivery_id))
        self._cond.notify_all()

    # observing -----------------------------------------------------------
    def deliveries(self, *, event: str | None = None, repo: str | None = None) -> list[Delivery]:
        with self._cond:
            items = list(self._deliveries.values())
        return [
            d for d in items if (event is None or d.event == event) and (repo is None or d.repo.lower() == repo.lower())
        ]

    def get(self, delivery_id: int) -> Delivery | None:
        with self._cond:
            return self._deliveries.get(delivery_id)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no delivery is due or being sent; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._due or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    # sending -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(max(0.0, self._due[0][0] - time.monotonic()) if self._due else None)
                if self._closed:
                    return
                _, _, delivery_id = heapq.heappop(self._due)
                delivery = self._deliveries.get(delivery_id)
                if delivery is None:
                    continue
                self._in_flight += 1
            try:
                self._attempt(delivery)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if not delivery.done:
                        delay = self.retry_delays[delivery.attempts - 1]
                        self._schedule(delivery.id, time.monotonic() + delay)
                    self._cond.notify_all()

    def _attempt(self, delivery: Delivery) -> None:
        # http.client rather than urllib: urllib would send "X-github-event", GitHub sends the case shown above
        url = urllib.parse.urlsplit(delivery.hook.url)
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            connection = connection_class(url.hostname or "", url.port, timeout=self.timeout)
            try:
                connection.request("POST", urllib.parse.urlunsplit(("", "", url.path or "/", url.query, "")),
                                   body=delivery.body, headers=delivery.headers())
                answer = connection.getresponse()
                answer.read()
                status = answer.status
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            error = str(exc) or type(exc).__name__
        delivery.attempts += 1
        delivery.status_code = status
        delivery.error = error
        delivery.duration = round(time.monotonic() - started, 4)
        delivery.delivered_at = time.time()
        ok = status is not None and 200 <= status < 300
        delivery.done = ok or delivery.attempts > len(self.retry_delays)
        if not ok:
            log.info(
                "sentinel hub: webhook delivery %s (%s) to %s failed: %s%s",
                delivery.guid,
                delivery.event,
                delivery.hook.url,
                error or status,
                "" if delivery.done else f"; retry {delivery.attempts} follows",
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1)
