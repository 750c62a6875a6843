"""Poll mode (``github.intake.mode: poll``): for a cluster behind a firewall, with no public URL.

Every ``pollIntervalMs`` the poller reads, with conditional requests (``If-None-Match`` with the last
``ETag``: an unchanged answer is a 304, which GitHub does not count against the rate limit):

* ``GET /repos/{o}/{r}/issues/comments?since=…&sort=updated&direction=asc`` — new comments, each
  handed to :meth:`~.intake.Intake.handle` as the ``issue_comment`` ``created`` event GitHub would
  have delivered (claimed once by comment id, so an edit or the inclusive ``since`` replays nothing);
* every other poll, and only when a ``label`` rule exists, ``GET /repos/{o}/{r}/issues/events``
  (newest first) — ``labeled`` events newer than the last one seen, handed on as ``issues``
  ``labeled`` with their actor as the sender, so the labeler's permission is checked as with webhooks.

The first poll starts from now: history is not replayed. ``since``, the last event id and the ETags
are kept in Redis so a restarted poller carries on where it stopped.

Redis keys (under the namespace):
  intake:poll   hash: comments_since, comments_etag, events_last_id, events_etag
"""
from __future__ import annotations

import logging
import re
import threading
import time

import redis

from sentinel_celery.github.client import GitHubClient
from sentinel_celery.intake.guard import DeliveryLedger
from sentinel_celery.intake.intake import Intake
from sentinel_celery.worker.duty import run_step

logger = logging.getLogger("sentinel.intake")
_ISSUE_NUMBER = re.compile(r"/issues/(\d+)$")


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Poller:
    def __init__(self, intake: Intake, github: GitHubClient, client: redis.Redis, namespace: str,
                 ledger: DeliveryLedger):
        self.intake, self.github, self.client, self.ledger = intake, github, client, ledger
        self.key = f"{namespace}intake:poll"
        self.polls = 0
        self.watch_labels = any(rule.on == "label" for rule in intake.rules.rules)

    def step(self) -> int:
        """One poll; returns how many events it handed to the intake."""
        state = self.client.hgetall(self.key)
        if not state:
            state = {"comments_since": _iso_now()}
            self.client.hset(self.key, mapping=state)
        self.polls += 1
        handed = self._comments(state)
        if self.watch_labels and self.polls % 2 == 1:
            handed += self._labels(state)
        return handed

    def _read(self, path: str, since: str, saved: dict, name: str, **params: str) -> list | None:
        response = self.github.get(path, params={"since": since, "sort": "updated", "direction": "asc",
                                                 "per_page": "100", **params},
                                   etag=saved.get(f"{name}_etag") or None)
        if response.status == 304:
            return None
        if response.etag:
            self.client.hset(self.key, f"{name}_etag", response.etag)
        return list(response.data or [])

    def _comments(self, state: dict) -> int:
        comments = self._read("issues/comments", state["comments_since"], state, "comments")
        if not comments:
            return 0
        handed = 0
        for comment in comments:
            match = _ISSUE_NUMBER.search(comment.get("issue_url") or "")
            if match is None or not self.ledger.claim(f"poll-comment-{comment['id']}"):
                continue
            payload = {"action": "created", "comment": comment, "issue": {"number": int(match.group(1))},
                       "sender": comment.get("user")}
            self.intake.handle("issue_comment", payload, f"poll-comment-{comment['id']}")
            handed += 1
        self.client.hset(self.key, "comments_since", comments[-1].get("updated_at") or state["comments_since"])
        return handed

    def _labels(self, state: dict) -> int:
        response = self.github.get("issues/events", params={"per_page": "100"},
                                   etag=state.get("events_etag") or None)
        if response.status == 304:
            return 0
        if response.etag:
            self.client.hset(self.key, "events_etag", response.etag)
        events = list(response.data or [])
        newest = max((int(e.get("id") or 0) for e in events), default=0)
        if "events_last_id" not in state:  # the first poll: start from now
            self.client.hset(self.key, "events_last_id", newest)
            return 0
        last = int(state["events_last_id"])
        handed = 0
        for event in sorted(events, key=lambda e: int(e.get("id") or 0)):
            name = (event.get("label") or {}).get("name") or ""
            if int(event.get("id") or 0) <= last or event.get("event") != "labeled" or \
                    self.intake.rules.label_template(name) is None:
                continue
            delivery = f"poll-event-{event['id']}"
            if not self.ledger.claim(delivery):
                continue
            payload = {"action": "labeled", "label": event.get("label"), "issue": event.get("issue") or {},
                       "sender": event.get("actor")}
            self.intake.handle("issues", payload, delivery)
            handed += 1
        if newest > last:
            self.client.hset(self.key, "events_last_id", newest)
        return handed


class PollThread(threading.Thread):
    def __init__(self, poller: Poller, interval: float, stopping: threading.Event):
        super().__init__(name="sentinel-intake-poll", daemon=True)
        self.poller, self.interval, self.stopping = poller, interval, stopping

    def run(self) -> None:
        while not self.stopping.is_set():
            run_step(self.poller.step, "intake poll")
            self.stopping.wait(self.interval)
