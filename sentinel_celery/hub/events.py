"""Webhook payloads built from the hub's state, in GitHub's shapes, and the issue events timeline.

An issue's ``labeled``, ``unlabeled``, ``closed`` and ``reopened`` events are also recorded (table
``issue_events``, with their actor), for ``GET /repos/{o}/{r}/issues/events`` and
``/issues/{n}/events`` (api/issue_events.py), whether or not a hook wants them.

Owns what each event an endpoint raises carries (checked against GitHub's published webhook
schemas, ``@octokit/webhooks-schemas``; see docs/hub-fidelity.md):

  ``issues``         ``{action, issue, repository, sender}``; ``label`` for labeled/unlabeled,
                     ``changes`` for edited. Actions: opened, edited, closed, reopened, labeled,
                     unlabeled
  ``issue_comment``  ``{action, issue, comment, repository, sender}``; ``changes`` for edited.
                     Actions: created, edited, deleted
  ``label``          ``{action, label, repository, sender}``; ``changes`` for edited.
                     Actions: created, edited, deleted
  ``push``           ``{ref, before, after, created, deleted, forced, base_ref, compare, commits,
                     head_commit, repository, pusher, sender}`` (the repository in push's own
                     shape: times as epoch seconds, owner with name and email)

A payload is built only when a hook wants it (:meth:`~.webhooks.Webhooks.wanted`), and handed to
``ctx.state.webhooks``, which sends it once the request's transaction committed.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from . import shapes
from .context import RequestContext
from .git import GitRepo
from .timestamps import iso, parse_iso

ZERO_SHA = "0" * 40


# fields the REST API has and webhook payloads do not (per @octokit/webhooks-schemas)
_NOT_IN_WEBHOOKS = {
    "repository": ("permissions", "network_count", "subscribers_count", "temp_clone_token"),
    "issue": ("closed_by",),
    "label": ("archived_at", "archived_by"),
    "user": ("user_view_type",),
}


def _webhook_shape(value: Any, kind: str | None = None) -> Any:
    """The REST shape of an object trimmed to its webhook shape, recursively."""
    if isinstance(value, list):
        return [_webhook_shape(item, kind) for item in value]
    if not isinstance(value, dict):
        return value
    if kind is None and "login" in value and "type" in value:
        kind = "user"
    dropped = _NOT_IN_WEBHOOKS.get(kind or "", ())
    child_kinds = {"repository": "repository", "issue": "issue", "label": "label", "labels": "label"}
    return {
        key: _webhook_shape(item, child_kinds.get(key) if isinstance(item, (dict, list)) else None)
        for key, item in value.items()
        if key not in dropped
    }


def _repository(ctx: RequestContext, repo_row: sqlite3.Row) -> dict[str, Any]:
    data = shapes.repo(ctx, repo_row)
    data.update({"custom_properties": {}, "license": None})
    return data


def _sender(ctx: RequestContext) -> dict[str, Any] | None:
    return shapes.user(ctx.urls, ctx.store.user(ctx.caller.user_id))


def _emit(ctx: RequestContext, repo_row: sqlite3.Row, event: str, payload: dict[str, Any]) -> None:
    ctx.state.webhooks.emit(repo_row["full_name"], repo_row["id"], event, _webhook_shape(payload))


def wanted(ctx: RequestContext, repo_row: sqlite3.Row, event: str) -> bool:
    return ctx.state.webhooks.wanted(repo_row["full_name"], event)


# issues and labels -------------------------------------------------------
def issue_label_ids(ctx: RequestContext, issue_id: int) -> list[int]:
    """An issue's label ids, to compare before and after a change (:func:`labels_changed`)."""
    return [r["label_id"] for r in ctx.store.all("SELECT label_id FROM issue_labels WHERE issue_id = ?", (issue_id,))]


def issue(
    ctx: RequestContext,
    repo_row: sqlite3.Row,
    issue_id: int,
    action: str,
    *,
    label_row: sqlite3.Row | None = None,
    changes: dict[str, Any] | None = None,
) -> None:
    if not wanted(ctx, repo_row, "issues"):
        return
    row = ctx.store.one("SELECT * FROM issues WHERE id = ?", (issue_id,))
    payload: dict[str, Any] = {"action": action, "issue": shapes.issue(ctx, repo_row, row)}
    if label_row is not None:
        payload["label"] = shapes.label(ctx.urls, repo_row["full_name"], label_row)
    if changes is not None:
        payload["changes"] = changes
    payload.update(repository=_repository(ctx, repo_row), sender=_sender(ctx))
    _emit(ctx, repo_row, "issues", payload)


def _record(ctx: RequestContext, repo_row: sqlite3.Row, issue_id: int, event: str,
            label_row: sqlite3.Row | None = None) -> None:
    ctx.store.insert(
        "INSERT INTO issue_events (repo_id, issue_id, actor_id, event, label_name, label_color, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (repo_row["id"], issue_id, ctx.caller.user_id, event, label_row["name"] if label_row else None,
         label_row["color"] if label_row else None, iso()),
    )


def labels_changed(ctx: RequestContext, repo_row: sqlite3.Row, issue_id: int, before: list[int]) -> None:
    """``issues`` labeled / unlabeled, one event per label added or removed since ``before``."""
    after = issue_label_ids(ctx, issue_id)
    for action, ids in (("unlabeled", [i for i in before if i not in after]), ("labeled", [i for i in after if i not in before])):
        for label_id in ids:
            label_row = ctx.store.one("SELECT * FROM labels WHERE id = ?", (label_id,))
            if label_row is not None:
                _record(ctx, repo_row, issue_id, action, label_row)
                issue(ctx, repo_row, issue_id, action, label_row=label_row)


def state_changed(ctx: RequestContext, repo_row: sqlite3.Row, issue_id: int, action: str) -> None:
    """``issues`` closed / reopened."""
    _record(ctx, repo_row, issue_id, action)
    issue(ctx, repo_row, issue_id, action)


def label(
    ctx: RequestContext, repo_row: sqlite3.Row, label_row: sqlite3.Row, action: str, changes: dict | None = None
) -> None:
    if not wanted(ctx, repo_row, "label"):
        return
    payload: dict[str, Any] = {"action": action, "label": shapes.label(ctx.urls, repo_row["full_name"], label_row)}
    if changes is not None:
        payload["changes"] = changes
    payload.update(repository=_repository(ctx, repo_row), sender=_sender(ctx))
    _emit(ctx, repo_row, "label", payload)


def comment(
    ctx: RequestContext,
    repo_row: sqlite3.Row,
    comment_row: sqlite3.Row,
    issue_number: int,
    action: str,
    changes: dict[str, Any] | None = None,
) -> None:
    if not wanted(ctx, repo_row, "issue_comment"):
        return
    issue_row = ctx.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", (repo_row["id"], issue_number))
    payload: dict[str, Any] = {
        "action": action,
        "issue": shapes.issue(ctx, repo_row, issue_row),
        "comment": shapes.comment(ctx, repo_row, comment_row, issue_number),
    }
    if changes is not None:
        payload["changes"] = changes
    payload.update(repository=_repository(ctx, repo_row), sender=_sender(ctx))
    _emit(ctx, repo_row, "issue_comment", payload)


# push --------------------------------------------------------------------
def _push_repository(ctx: RequestContext, repo_row: sqlite3.Row) -> dict[str, Any]:
    data = _repository(ctx, repo_row)
    owner = dict(data["owner"])
    owner.update(name=owner["login"], email=None)
    data.update(
        owner=owner,
        created_at=int(parse_iso(repo_row["created_at"]).timestamp()),
        pushed_at=int(parse_iso(repo_row["pushed_at"]).timestamp()),
        stargazers=0,
        master_branch=repo_row["default_branch"],
    )
    return data


def _push_commit(ctx: RequestContext, repo_row: sqlite3.Row, git: GitRepo, sha: str, parent: str | None) -> dict:
    info = git.commit(sha)
    assert info is not None
    changed: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
    before = dict(git.walk(git.commit(parent).tree)) if parent and git.commit(parent) else {}
    after = dict(git.walk(info.tree))
    for path, entry in after.items():
        if path not in before:
            changed["added"].append(path)
        elif before[path].sha != entry.sha:
            changed["modified"].append(path)
    changed["removed"] = [p for p in before if p not in after]

    def person(sig: Any) -> dict[str, Any]:
        return {"name": sig.name, "email": sig.email, "username": sig.name}

    return {
        "id": sha,
        "tree_id": info.tree,
        "distinct": True,
        "message": info.message,
        "timestamp": iso(info.committer.date),
        "url": f"{ctx.urls.repo_web(repo_row['full_name'])}/commit/{sha}",
        "author": person(info.author),
        "committer": person(info.committer),
        **changed,
    }


def push(ctx: RequestContext, repo_row: sqlite3.Row, ref: str, before: str | None, after: str | None) -> None:
    """``push`` for ``ref`` moving from ``before`` to ``after`` (None: created / deleted)."""
    if not wanted(ctx, repo_row, "push"):
        return
    git = GitRepo(ctx.store, repo_row["id"])
    commits = []
    if after:
        new, sha = [], after
        while sha and sha != before and len(new) < 20:  # first parents back to the old head
            info = git.commit(sha)
            if info is None:
                break
            new.append(info)
            sha = info.parents[0] if info.parents else None
        for info in reversed(new):
            commits.append(_push_commit(ctx, repo_row, git, info.sha, info.parents[0] if info.parents else None))
    forced = bool(before and after and not git.is_ancestor(before, after))
    web = ctx.urls.repo_web(repo_row["full_name"])
    sender = _sender(ctx) or {}
    payload = {
        "ref": ref,
        "before": before or ZERO_SHA,
        "after": after or ZERO_SHA,
        "repository": _push_repository(ctx, repo_row),
        "pusher": {"name": sender.get("login"), "email": None},
        "sender": sender,
        "created": before is None,
        "deleted": after is None,
        "forced": forced,
        "base_ref": None,
        "compare": f"{web}/compare/{(before or ZERO_SHA)[:12]}...{(after or ZERO_SHA)[:12]}",
        "commits": commits,
        "head_commit": commits[-1] if commits else None,
    }
    _emit(ctx, repo_row, "push", payload)
