"""Issue endpoints: create, get, update, list (with GitHub's filters), and assignees.

Assigning someone without push access fails with 422 on create and update,
and is silently ignored by the ``/assignees`` endpoints, as on GitHub. Labels
named on create or update that do not exist yet are created (colour
``ededed``), as GitHub does for callers with push access. The hub has no
milestones, so naming one is a 422 (GitHub's answer for a milestone that
does not exist); ``"milestone": null`` is accepted.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .. import events, shapes
from ..context import RequestContext
from ..errors import HubError, invalid, missing_field, not_found
from ..limits import MAX_BODY, MAX_TITLE, check_length
from ..routing import Response, Router
from ..timestamps import iso, parse_iso
from .repos import assignable

router = Router()
_STATES = ("open", "closed")
_STATE_REASONS = ("completed", "not_planned", "reopened", "duplicate")


def get_issue(ctx: RequestContext, repo_row: sqlite3.Row, number: int) -> sqlite3.Row:
    row = ctx.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", (repo_row["id"], number))
    if row is None:
        raise not_found()
    return row


def render(ctx: RequestContext, repo_row: sqlite3.Row, issue_id: int, status: int = 200) -> Response:
    row = ctx.store.one("SELECT * FROM issues WHERE id = ?", (issue_id,))
    return Response(status, shapes.issue(ctx, repo_row, row))


def touch(ctx: RequestContext, issue_id: int) -> None:
    ctx.store.execute("UPDATE issues SET updated_at = ? WHERE id = ?", (iso(), issue_id))


def label_names(value: Any, resource: str = "Label") -> list[str]:
    """Label names from a list of names or of ``{"name": ...}`` objects."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(resource, "labels", value=value)
    names = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else item
        if not isinstance(name, (str, int)) or str(name).strip() == "":
            raise invalid(resource, "name", value=item)
        names.append(str(name).strip())
    return names


def ensure_labels(ctx: RequestContext, repo_id: int, names: list[str]) -> list[int]:
    ids = []
    for name in names:
        row = ctx.store.one("SELECT id FROM labels WHERE repo_id = ? AND name = ?", (repo_id, name))
        if row is None:
            ids.append(
                ctx.store.insert("INSERT INTO labels (repo_id, name, color) VALUES (?, ?, 'ededed')", (repo_id, name))
            )
        else:
            ids.append(row["id"])
    return list(dict.fromkeys(ids))


def set_labels(ctx: RequestContext, repo_id: int, issue_id: int, names: list[str]) -> None:
    ctx.store.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue_id,))
    for label_id in ensure_labels(ctx, repo_id, names):
        ctx.store.execute("INSERT OR IGNORE INTO issue_labels (issue_id, label_id) VALUES (?, ?)", (issue_id, label_id))


def _assignee_ids(ctx: RequestContext, repo_row: sqlite3.Row, logins: Any, strict: bool) -> list[int]:
    if logins is None:
        return []
    if not isinstance(logins, list):
        raise invalid("Issue", "assignees", value=logins)
    ids = []
    for login in logins:
        user = assignable(ctx, repo_row, str(login)) if isinstance(login, str) else None
        if user is None:
            if strict:
                raise invalid("Issue", "assignees", value=login)
            continue
        ids.append(user["id"])
    return list(dict.fromkeys(ids))


def set_assignees(ctx: RequestContext, issue_id: int, user_ids: list[int]) -> None:
    ctx.store.execute("DELETE FROM issue_assignees WHERE issue_id = ?", (issue_id,))
    for user_id in user_ids[:10]:  # GitHub allows at most 10 assignees
        ctx.store.execute("INSERT INTO issue_assignees (issue_id, user_id) VALUES (?, ?)", (issue_id, user_id))


def _requested_assignees(data: dict[str, Any]) -> list[Any] | None:
    if "assignees" in data and data["assignees"] is not None:
        return data["assignees"]
    if "assignee" in data:
        return [] if data["assignee"] in (None, "") else [data["assignee"]]
    return None


def _title(data: dict[str, Any]) -> str:
    title = data.get("title")
    if isinstance(title, int) and not isinstance(title, bool):
        title = str(title)
    if not isinstance(title, str) or not title.strip():
        raise missing_field("Issue", "title") if "title" not in data else invalid("Issue", "title", value=title)
    check_length("Issue", "title", title, MAX_TITLE)
    return title


def _check_milestone(data: dict[str, Any]) -> None:
    if data.get("milestone") is not None:  # no milestone exists on the hub
        raise invalid("Issue", "milestone", value=data["milestone"])


def _body(data: dict[str, Any]) -> str | None:
    body = data.get("body")
    if body is not None and not isinstance(body, str):
        raise invalid("Issue", "body", value=body)
    check_length("Issue", "body", body, MAX_BODY)
    return body


@router.route("POST", "/repos/{owner}/{repo}/issues")
def create_issue(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    data = ctx.json_object()
    title = _title(data)
    body = _body(data)
    _check_milestone(data)
    labels = label_names(data.get("labels"), "Issue")
    assignees = _assignee_ids(ctx, repo_row, _requested_assignees(data), strict=True)
    number = repo_row["next_number"]
    ctx.store.execute("UPDATE repos SET next_number = next_number + 1 WHERE id = ?", (repo_row["id"],))
    now = iso()
    issue_id = ctx.store.insert(
        "INSERT INTO issues (repo_id, number, title, body, user_id, app_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            repo_row["id"],
            number,
            title,
            body,
            ctx.caller.user_id,
            ctx.caller.spec.app_id if ctx.caller.spec.is_app else None,
            now,
            now,
        ),
    )
    set_labels(ctx, repo_row["id"], issue_id, labels)
    set_assignees(ctx, issue_id, assignees)
    ctx.store.touch_repo(repo_row["id"])
    events.issue(ctx, repo_row, issue_id, "opened")
    events.labels_changed(ctx, repo_row, issue_id, [])
    response = render(ctx, repo_row, issue_id, 201)
    response.headers["Location"] = response.body["url"]
    return response


@router.route("GET", "/repos/{owner}/{repo}/issues/{number:int}")
def get_issue_endpoint(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    return render(ctx, repo_row, get_issue(ctx, repo_row, number)["id"])


@router.route("PATCH", "/repos/{owner}/{repo}/issues/{number:int}")
def update_issue(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = get_issue(ctx, repo_row, number)
    data = ctx.json_object()
    _check_milestone(data)
    changes: dict[str, Any] = {}
    if "title" in data:
        changes["title"] = _title(data)
    if "body" in data:
        changes["body"] = _body(data)
    if "state" in data:
        state = data["state"]
        if state not in _STATES:
            raise invalid("Issue", "state", value=state)
        reason = data.get("state_reason")
        if reason is not None and reason not in _STATE_REASONS:
            raise invalid("Issue", "state_reason", value=reason)
        if state == "closed" and row["state"] != "closed":
            changes.update(
                state="closed", closed_at=iso(), closed_by_id=ctx.caller.user_id, state_reason=reason or "completed"
            )
        elif state == "open" and row["state"] != "open":
            changes.update(state="open", closed_at=None, closed_by_id=None, state_reason="reopened")
        elif reason is not None:
            changes["state_reason"] = reason
    labels_before = events.issue_label_ids(ctx, row["id"])
    if "labels" in data:
        set_labels(ctx, repo_row["id"], row["id"], label_names(data["labels"], "Issue"))
    requested = _requested_assignees(data)
    if requested is not None:
        set_assignees(ctx, row["id"], _assignee_ids(ctx, repo_row, requested, strict=True))
    changes["updated_at"] = iso()
    columns = ", ".join(f"{name} = ?" for name in changes)
    ctx.store.execute(f"UPDATE issues SET {columns} WHERE id = ?", (*changes.values(), row["id"]))
    edited = {key: {"from": row[key]} for key in ("title", "body") if key in changes and changes[key] != row[key]}
    if edited:
        events.issue(ctx, repo_row, row["id"], "edited", changes=edited)
    if changes.get("state") == "closed":
        events.state_changed(ctx, repo_row, row["id"], "closed")
    elif changes.get("state") == "open":
        events.state_changed(ctx, repo_row, row["id"], "reopened")
    events.labels_changed(ctx, repo_row, row["id"], labels_before)
    return render(ctx, repo_row, row["id"])


def _filter_sql(ctx: RequestContext, repo_row: sqlite3.Row) -> tuple[str, list[Any]]:
    where, params = ["i.repo_id = ?"], [repo_row["id"]]
    state = ctx.arg("state", "open")
    if state not in ("open", "closed", "all"):
        raise invalid("Issue", "state", value=state)
    if state != "all":
        where.append("i.state = ?")
        params.append(state)
    labels = [name.strip() for name in (ctx.arg("labels") or "").split(",") if name.strip()]
    for name in labels:
        where.append(
            "EXISTS (SELECT 1 FROM issue_labels il JOIN labels l ON l.id = il.label_id WHERE il.issue_id = i.id AND l.name = ?)"
        )
        params.append(name)
    assignee = ctx.arg("assignee")
    if assignee == "none":
        where.append("NOT EXISTS (SELECT 1 FROM issue_assignees ia WHERE ia.issue_id = i.id)")
    elif assignee == "*":
        where.append("EXISTS (SELECT 1 FROM issue_assignees ia WHERE ia.issue_id = i.id)")
    elif assignee:
        where.append(
            "EXISTS (SELECT 1 FROM issue_assignees ia JOIN users u ON u.id = ia.user_id WHERE ia.issue_id = i.id AND u.login = ?)"
        )
        params.append(assignee)
    creator = ctx.arg("creator")
    if creator:
        where.append("i.user_id = (SELECT id FROM users WHERE login = ?)")
        params.append(creator)
    since = ctx.arg("since")
    if since:
        try:
            moment = parse_iso(since)
        except ValueError:
            raise invalid("Issue", "since", value=since) from None
        where.append("i.updated_at >= ?")
        params.append(iso(moment.timestamp()))
    return " AND ".join(where), params


@router.route("GET", "/repos/{owner}/{repo}/issues")
def list_issues(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    where, params = _filter_sql(ctx, repo_row)
    sort = ctx.arg("sort", "created")
    direction = ctx.arg("direction", "desc")
    columns = {
        "created": "i.created_at {d}, i.id {d}",
        "updated": "i.updated_at {d}, i.id {d}",
        "comments": "(SELECT COUNT(*) FROM comments c WHERE c.issue_id = i.id) {d}, i.id {d}",
    }
    if sort not in columns:
        raise invalid("Issue", "sort", value=sort)
    if direction not in ("asc", "desc"):
        raise invalid("Issue", "direction", value=direction)
    order = columns[sort].format(d=direction.upper())
    rows = ctx.store.all(f"SELECT i.* FROM issues i WHERE {where} ORDER BY {order}", params)
    page = ctx.paginate(rows)
    page.body = [shapes.issue(ctx, repo_row, row) for row in page.body]
    return page


@router.route("POST", "/repos/{owner}/{repo}/issues/{number:int}/assignees")
def add_assignees(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = get_issue(ctx, repo_row, number)
    requested = _assignee_ids(ctx, repo_row, ctx.json_object().get("assignees", []), strict=False)
    current = [
        r["user_id"] for r in ctx.store.all("SELECT user_id FROM issue_assignees WHERE issue_id = ?", (row["id"],))
    ]
    set_assignees(ctx, row["id"], list(dict.fromkeys(current + requested)))
    touch(ctx, row["id"])
    return render(ctx, repo_row, row["id"], 201)


@router.route("DELETE", "/repos/{owner}/{repo}/issues/{number:int}/assignees")
def remove_assignees(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = get_issue(ctx, repo_row, number)
    logins = ctx.json_object().get("assignees", [])
    if not isinstance(logins, list):
        raise invalid("Issue", "assignees", value=logins)
    for login in logins:
        ctx.store.execute(
            "DELETE FROM issue_assignees WHERE issue_id = ? AND user_id = (SELECT id FROM users WHERE login = ?)",
            (row["id"], str(login)),
        )
    touch(ctx, row["id"])
    return render(ctx, repo_row, row["id"])


@router.route("GET", "/repos/{owner}/{repo}/issues/{number:int}/assignees/{username}")
def check_issue_assignee(ctx: RequestContext, owner: str, repo: str, number: int, username: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    get_issue(ctx, repo_row, number)
    if assignable(ctx, repo_row, username) is None:
        raise HubError(404, "Not Found")
    return Response(204)
