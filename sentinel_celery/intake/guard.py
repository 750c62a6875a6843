"""What keeps the intake safe: signatures, replays, who may start jobs, and floods.

* :func:`signature_ok` — ``X-Hub-Signature-256`` is ``sha256=`` + HMAC-SHA256 of the raw body with
  ``github.webhookSecret``, compared in constant time (:func:`hmac.compare_digest`);
* :class:`DeliveryLedger` — each ``X-GitHub-Delivery`` (or a polled comment's id) is claimed once
  (``SET NX``), so a redelivery or replay queues nothing new;
* :class:`Permissions` — a sender's permission on the repository from
  ``GET /repos/{o}/{r}/collaborators/{user}/permission``, cached for ``permissionCacheSeconds``;
  a command is accepted only at ``github.intake.minPermission`` or above;
* :class:`IssueRateLimit` — at most ``maxCommandsPerIssuePerMinute`` commands per issue per minute;
* :class:`ReplyLedger` — a refused command is answered once per issue and reason an hour, so a
  flood of refused comments costs one reply.

Redis keys (under the namespace):
  intake:delivery:<id>          "1", for ``deliveryTtlSeconds`` (default a week): a delivery seen
  intake:permission:<login>     the sender's role name, for ``permissionCacheSeconds``
  intake:rate:<issue>:<minute>  commands counted in that minute on that issue (expires after 2 minutes)
  intake:replied:<issue>:<why>  "1" for an hour: that refusal was answered already
"""
from __future__ import annotations

import hashlib
import hmac
import time

import redis

from sentinel_celery.github.client import GitHubClient, NotFound

ROLES = ("none", "read", "triage", "write", "maintain", "admin")
_LEGACY = {"pull": "read", "push": "write"}


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the ``sha256=`` HMAC of ``body`` with ``secret`` (constant-time compare)."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def role_rank(role: str) -> int:
    role = _LEGACY.get(role, role)
    return ROLES.index(role) if role in ROLES else 0


class DeliveryLedger:
    def __init__(self, client: redis.Redis, namespace: str, ttl_seconds: int = 7 * 24 * 3600):
        self.client, self.ns, self.ttl = client, namespace, ttl_seconds

    def claim(self, delivery_id: str) -> bool:
        """True the first time ``delivery_id`` is seen, False for a replay."""
        return bool(self.client.set(f"{self.ns}intake:delivery:{delivery_id}", "1", nx=True, ex=self.ttl))


class Permissions:
    """A login's role on the repository, looked up through the API and cached briefly."""

    def __init__(self, github: GitHubClient, client: redis.Redis, namespace: str, ttl_seconds: int = 60):
        self.github, self.client, self.ns, self.ttl = github, client, namespace, ttl_seconds

    def role(self, login: str) -> str:
        key = f"{self.ns}intake:permission:{login.lower()}"
        cached = self.client.get(key)
        if cached:
            return cached
        try:
            data = self.github.get(f"collaborators/{login}/permission").data or {}
            role = str(data.get("role_name") or data.get("permission") or "none")
        except NotFound:  # not a collaborator, or no such user
            role = "none"
        self.client.set(key, role, ex=self.ttl)
        return role

    def allows(self, login: str, minimum: str) -> tuple[bool, str]:
        role = self.role(login)
        return role_rank(role) >= role_rank(minimum), role


class IssueRateLimit:
    def __init__(self, client: redis.Redis, namespace: str, per_minute: int):
        self.client, self.ns, self.per_minute = client, namespace, per_minute

    def allow(self, issue: int) -> bool:
        minute = int(time.time() // 60)
        key = f"{self.ns}intake:rate:{issue}:{minute}"
        pipe = self.client.pipeline()
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = pipe.execute()
        return int(count) <= self.per_minute


class ReplyLedger:
    def __init__(self, client: redis.Redis, namespace: str):
        self.client, self.ns = client, namespace

    def first(self, issue: int, reason: str) -> bool:
        return bool(self.client.set(f"{self.ns}intake:replied:{issue}:{reason}", "1", nx=True, ex=3600))
