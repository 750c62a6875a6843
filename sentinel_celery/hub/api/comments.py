"""Issue comment endpoints: create and list on an issue; get, update, delete by id; list for a repository."""

from __future__ import annotations

import sqlite3

from .. import events, shapes
from ..context import RequestContext
from ..errors import invalid, missing_field, not_found
from ..limits import MAX_BODY, check_length
from ..routing import Response, Router
from ..timestamps import iso, parse_iso
from .issues import get_issue, touch

router = Router()


def _body(ctx: RequestContext) -> str:
    data = ctx.json_object()
    if "body" not in data:
        raise missing_field("IssueComment", "body")
    body = data["body"]
    if not isinstance(body, str) or not body.strip():
        raise invalid("IssueComment", "body", code="missing_field" if not body else "invalid")
    check_length("IssueComment", "body", body, MAX_BODY)
    return body


def _get(ctx: RequestContext, repo_row: sqlite3.Row, comment_id: int) -> sqlite3.Row:
    row = ctx.store.one(
        "SELECT c.*, i.number FROM comments c JOIN issues i ON i.id = c.issue_id WHERE c.id = ? AND c.repo_id = ?",
        (comment_id, repo_row["id"]),
    )
    if row is None:
        raise not_found()
    return row


def _since(ctx: RequestContext) -> tuple[str, list[str]]:
    since = ctx.arg("since")
    if not since:
        return "", []
    try:
        return " AND c.updated_at >= ?", [iso(parse_iso(since).timestamp())]
    except ValueError:
        raise invalid("IssueComment", "since", value=since) from None


@router.route("POST", "/repos/{owner}/{repo}/issues/{number:int}/comments")
def create_comment(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    body = _body(ctx)
    now = iso()
    spec = ctx.caller.spec
    comment_id = ctx.store.insert(
        "INSERT INTO comments (repo_id, issue_id, user_id, app_id, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (repo_row["id"], issue["id"], ctx.caller.user_id, spec.app_id if spec.is_app else None, body, now, now),
    )
    touch(ctx, issue["id"])
    events.comment(ctx, repo_row, _get(ctx, repo_row, comment_id), number, "created")
    data = shapes.comment(ctx, repo_row, _get(ctx, repo_row, comment_id), number)
    return Response(201, data, {"Location": data["url"]})


@router.route("GET", "/repos/{owner}/{repo}/issues/{number:int}/comments")
def list_comments(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    since_sql, params = _since(ctx)
    rows = ctx.store.all(
        f"SELECT c.* FROM comments c WHERE c.issue_id = ?{since_sql} ORDER BY c.id", [issue["id"], *params]
    )
    page = ctx.paginate(rows)
    page.body = [shapes.comment(ctx, repo_row, row, number) for row in page.body]
    return page


@router.route("GET", "/repos/{owner}/{repo}/issues/comments")
def list_repo_comments(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    since_sql, params = _since(ctx)
    direction = "DESC" if ctx.arg("direction", "asc") == "desc" else "ASC"
    column = "c.updated_at" if ctx.arg("sort") == "updated" else "c.created_at"
    rows = ctx.store.all(
        f"SELECT c.*, i.number FROM comments c JOIN issues i ON i.id = c.issue_id WHERE c.repo_id = ?{since_sql} "
        f"ORDER BY {column} {direction}, c.id {direction}",
        [repo_row["id"], *params],
    )
    page = ctx.paginate(rows)
    page.body = [shapes.comment(ctx, repo_row, row, row["number"]) for row in page.body]
    return page


@router.route("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def get_comment(ctx: RequestContext, owner: str, repo: str, comment_id: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = _get(ctx, repo_row, comment_id)
    return Response(200, shapes.comment(ctx, repo_row, row, row["number"]))


@router.route("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def update_comment(ctx: RequestContext, owner: str, repo: str, comment_id: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = _get(ctx, repo_row, comment_id)
    body = _body(ctx)
    ctx.store.execute("UPDATE comments SET body = ?, updated_at = ? WHERE id = ?", (body, iso(), comment_id))
    updated = _get(ctx, repo_row, comment_id)
    if body != row["body"]:
        events.comment(ctx, repo_row, updated, row["number"], "edited", changes={"body": {"from": row["body"]}})
    return Response(200, shapes.comment(ctx, repo_row, updated, row["number"]))


@router.route("DELETE", "/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def delete_comment(ctx: RequestContext, owner: str, repo: str, comment_id: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = _get(ctx, repo_row, comment_id)
    events.comment(ctx, repo_row, row, row["number"], "deleted")
    ctx.store.execute("DELETE FROM comments WHERE id = ?", (comment_id,))
    return Response(204)
