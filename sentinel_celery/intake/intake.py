"""Turning GitHub events into job sends, through the configured rules and the guards.

:class:`Intake` takes one event (``push``, ``issue_comment``, ``issues``) as GitHub delivers it and
decides, in order: is it about the configured repository; is it something the rules act on; is the sender a bot or is the text Sentinel's
own (ignored: no loops); may the sender start jobs (:class:`~.guard.Permissions`); is the issue
flooding (:class:`~.guard.IssueRateLimit`); are the template and parameters allowed
(:mod:`.rules`). Then it sends the job with ``github_issue`` / ``sha``, so the mirror shows its
labels, status comment (results and failover events) and commit statuses as for any job. Every
refusal is one log line on ``sentinel.intake``; a reader or a bad command also gets one short reply
on the issue (once per issue and reason an hour, within the mirror's write budget), and nothing runs.

:class:`Inbox` is the queue between the HTTP receiver (which must answer GitHub within 10 s) and
whoever runs :meth:`Intake.handle`: a Redis list, so several receivers can share processors and an
event accepted just before a restart is still handled.

Redis keys (under the namespace): ``intake:inbox`` (list of JSON ``{event, delivery, payload}``) and
``intake:inbox:processing`` (the items being handled),
``intake:stats`` (hash: counters per outcome), ``intake:recent`` (list, newest first, the last 100
outcomes as JSON ``{at, event, delivery, result, reason, task_ids}``); the guards' keys (guard.py).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery, chain

from sentinel_celery.config import Config
from sentinel_celery.github import render
from sentinel_celery.github.client import GitHubClient, GitHubError
from sentinel_celery.intake.guard import IssueRateLimit, Permissions, ReplyLedger
from sentinel_celery.intake.rules import BadCommand, Rules, Template

logger = logging.getLogger("sentinel.intake")

HANDLED_EVENTS = ("push", "issue_comment", "issues")
REPLY_MARKER = render.marker("intake", "reply")
RECENT = 100


def recent(client: redis.Redis, namespace: str, limit: int = 20) -> list[dict]:
    """The latest outcomes, newest first (``sentinel intake status``, the demo)."""
    return [json.loads(x) for x in client.lrange(f"{namespace}intake:recent", 0, limit - 1)]


@dataclass
class Outcome:
    result: str  # "queued", "ignored" or "refused"
    reason: str = ""
    task_ids: list[str] = field(default_factory=list)


class Inbox:
    """Deliveries accepted and not yet handled. A processor moves an item to ``intake:inbox:processing``
    while it handles it (``BLMOVE``) and removes it after; what a dead processor left there goes back
    to the inbox when an intake starts (:meth:`recover`), and :class:`~.server.Processor` claims each
    delivery before handling it, so a recovered item is never handled twice."""

    def __init__(self, client: redis.Redis, namespace: str):
        self.client, self.key = client, f"{namespace}intake:inbox"
        self.processing = f"{namespace}intake:inbox:processing"

    def put(self, event: str, delivery: str, body: bytes) -> None:
        # the raw payload text, parsed again by the processor: no second serialisation on the fast path
        self.client.lpush(self.key, json.dumps({"event": event, "delivery": delivery,
                                                "payload": body.decode("utf-8")}))

    def take(self, timeout: float = 1.0) -> tuple[str, str, dict, str] | None:
        """The oldest item (event, delivery, payload, raw), moved to the processing list; None on timeout."""
        raw = self.client.blmove(self.key, self.processing, timeout, "RIGHT", "LEFT")
        if raw is None:
            return None
        data = json.loads(raw)
        return data["event"], data["delivery"], json.loads(data["payload"]), raw

    def done(self, raw: str) -> None:
        self.client.lrem(self.processing, 1, raw)

    def recover(self) -> int:
        """Put what processors left unfinished back at the head of the inbox; returns how many."""
        moved = 0
        while self.client.lmove(self.processing, self.key, "RIGHT", "RIGHT") is not None:
            moved += 1
        return moved


class Intake:
    """One repository's intake: ``handle(event, payload, delivery)`` → an :class:`Outcome`."""

    def __init__(self, app: Celery, cfg: Config, github: GitHubClient, client: redis.Redis):
        intake = cfg.get("github.intake")
        self.app, self.cfg, self.github, self.client = app, cfg, github, client
        self.ns = cfg.namespace
        self.repository = f"{cfg.get('github.owner')}/{cfg.get('github.repo')}"
        self.rules = Rules.from_config(intake)
        self.min_permission = intake["minPermission"]
        self.permissions = Permissions(github, client, self.ns, intake["permissionCacheSeconds"])
        self.rate = IssueRateLimit(client, self.ns, intake["maxCommandsPerIssuePerMinute"])
        self.replies = ReplyLedger(client, self.ns)
        self._lock = threading.Lock()

    # -- entry -----------------------------------------------------------------------------------
    def handle(self, event: str, payload: dict, delivery: str = "") -> Outcome:
        repository = str((payload.get("repository") or {}).get("full_name") or "")
        if repository and repository.lower() != self.repository.lower():
            logger.warning("sentinel intake: ignored delivery %s (%s) for %s: this intake serves %s",
                           delivery or "-", event, repository, self.repository)
            outcome = Outcome("ignored", f"another repository ({repository})")
        elif event == "push":
            outcome = self._push(payload)
        elif event == "issue_comment":
            outcome = self._comment(payload)
        elif event == "issues" and payload.get("action") == "labeled":
            outcome = self._label(payload)
        else:
            outcome = Outcome("ignored", f"{event}.{payload.get('action')} starts nothing")
        record = json.dumps({"at": time.time(), "event": event, "delivery": delivery, "result": outcome.result,
                             "reason": outcome.reason, "task_ids": outcome.task_ids})
        pipe = self.client.pipeline()
        pipe.hincrby(f"{self.ns}intake:stats", outcome.result, 1)
        pipe.lpush(f"{self.ns}intake:recent", record)
        pipe.ltrim(f"{self.ns}intake:recent", 0, RECENT - 1)
        pipe.execute()
        if outcome.result == "queued":
            logger.info("sentinel intake: delivery %s (%s): queued %s", delivery or "-", event,
                        ", ".join(outcome.task_ids))
        return outcome

    # -- push ------------------------------------------------------------------------------------
    def _push(self, payload: dict) -> Outcome:
        ref, sha = str(payload.get("ref") or ""), str(payload.get("after") or "")
        if payload.get("deleted") or not sha.strip("0"):
            return Outcome("ignored", f"{ref} deleted")
        rules = self.rules.push_rules(ref)
        if not rules:
            return Outcome("ignored", f"no push rule for {ref}")
        ids = []
        for rule in rules:
            signatures = [
                self.app.signature(t.task, kwargs=t.kwargs(t.bind({}), sha=sha), immutable=True)
                for t in (self.rules.template(name) for name in rule.chain)
            ]
            result = chain(*signatures).apply_async() if len(signatures) > 1 else signatures[0].apply_async()
            ids.extend(_chain_ids(result))
        return Outcome("queued", f"push to {ref} at {sha[:12]}", ids)

    # -- comments --------------------------------------------------------------------------------
    def _comment(self, payload: dict) -> Outcome:
        if payload.get("action") != "created":
            return Outcome("ignored", f"comment {payload.get('action')}")
        comment = payload.get("comment") or {}
        body = str(comment.get("body") or "")
        issue = int((payload.get("issue") or {}).get("number") or 0)
        sender = payload.get("sender") or comment.get("user") or {}
        if sender.get("type") == "Bot" or "<!-- sentinel:" in body:
            return Outcome("ignored", "a bot's or Sentinel's own comment")
        found = self.rules.comment_command(body)
        if found is None:
            return Outcome("ignored", "no command")
        rule, words = found
        login = str(sender.get("login") or "")
        what = f"{rule.command} from @{login} on issue #{issue}"
        refused = self._guard(login, issue, what)
        if refused:
            return refused
        try:
            template, values = self.rules.parse_command(rule, words)
        except BadCommand as exc:
            return self._refuse(issue, what, str(exc), "bad-command", f"Not started: {exc}.")
        return self._start(template, values, issue, what)

    # -- labels ----------------------------------------------------------------------------------
    def _label(self, payload: dict) -> Outcome:
        label = str((payload.get("label") or {}).get("name") or "")
        issue = int((payload.get("issue") or {}).get("number") or 0)
        found = self.rules.label_template(label)
        if found is None:
            return Outcome("ignored", f"label {label} starts nothing")
        _, name = found
        sender = payload.get("sender") or {}
        login = str(sender.get("login") or "")
        if sender.get("type") == "Bot":
            return Outcome("ignored", "a bot's label")
        what = f"label {label} from @{login or '?'} on issue #{issue}"
        refused = self._guard(login, issue, what)
        if refused:
            return refused
        try:
            template = self.rules.template(name)
            values = template.bind({})
        except BadCommand as exc:
            return self._refuse(issue, what, str(exc), "bad-label", f"Not started: {exc}.")
        try:  # first, so the mirror never sees it: sentinel:queued/running/done/failed take its place
            self.github.request("DELETE", f"issues/{issue}/labels/{urllib.parse.quote(label, safe='')}")
        except GitHubError as exc:
            logger.warning("sentinel intake: could not remove %s from issue #%s: %s", label, issue, exc)
        outcome = self._start(template, values, issue, what)
        return outcome

    # -- shared ----------------------------------------------------------------------------------
    def _guard(self, login: str, issue: int, what: str) -> Outcome | None:
        if not login:
            logger.warning("sentinel intake: refused %s: no sender", what)
            return Outcome("refused", "no sender")
        try:
            allowed, role = self.permissions.allows(login, self.min_permission)
        except GitHubError as exc:
            logger.warning("sentinel intake: refused %s: permission lookup failed: %s", what, exc)
            return Outcome("refused", "permission lookup failed")
        if not allowed:
            return self._refuse(issue, what, f"@{login} has {role} permission, {self.min_permission} is needed",
                                f"permission:{login.lower()}",
                                f"@{login}: starting jobs needs {self.min_permission} permission on this repository.")
        if not self.rate.allow(issue):
            return self._refuse(issue, what, "too many commands on this issue", "rate",
                                "Not started: too many commands on this issue in the last minute.")
        return None

    def _start(self, template: Template, values: dict[str, str], issue: int, what: str) -> Outcome:
        kwargs = template.kwargs(values, github_issue=issue)
        result = self.app.send_task(template.task, kwargs=kwargs)
        logger.info("sentinel intake: %s started template %s (%s) as %s", what, template.name,
                    " ".join(f"{k}={v}" for k, v in values.items()) or "no parameters", result.id)
        return Outcome("queued", f"{what}: {template.name}", [result.id])

    def _refuse(self, issue: int, what: str, why: str, reason: str, reply: str) -> Outcome:
        logger.warning("sentinel intake: refused %s: %s", what, why)
        if issue and self.replies.first(issue, reason):
            self._reply(issue, reply)
        return Outcome("refused", why)

    def _reply(self, issue: int, text: str) -> None:
        body = f"{render.text(text, 300)}\n\n{REPLY_MARKER}"
        try:
            self.github.request("POST", f"issues/{issue}/comments", body={"body": body})
        except GitHubError as exc:  # over budget or GitHub down: the log line stands alone
            logger.warning("sentinel intake: no reply on issue #%s: %s", issue, exc)


def _chain_ids(result: Any) -> list[str]:
    ids = []
    while result is not None:
        ids.append(result.id)
        result = result.parent
    return list(reversed(ids))
