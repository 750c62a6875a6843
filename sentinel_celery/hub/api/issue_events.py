"""Issue events: who labeled, unlabeled, closed or reopened an issue, and when.

``GET /repos/{o}/{r}/issues/events`` lists a repository's events newest first, each with its
``issue``; ``GET /repos/{o}/{r}/issues/{n}/events`` one issue's, oldest first; both paged, with ETags
(a poller's unchanged page is a 304). Only the four events above are recorded (events.py); GitHub
records many more kinds (assigned, mentioned, referenced, ...).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .. import shapes
from ..context import RequestContext
from ..routing import Response, Router
from .issues import get_issue

router = Router()


def _event(ctx: RequestContext, repo_row: sqlite3.Row, row: sqlite3.Row, *, with_issue: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row["id"],
        "node_id": shapes.node_id("IssueEvent", row["id"]),
        "url": f"{ctx.urls.repo_api(repo_row['full_name'])}/issues/events/{row['id']}",
        "actor": shapes.user(ctx.urls, ctx.store.user(row["actor_id"])),
        "event": row["event"],
        "commit_id": None,
        "commit_url": None,
        "created_at": row["created_at"],
        "performed_via_github_app": None,
    }
    if row["label_name"] is not None:
        data["label"] = {"name": row["label_name"], "color": row["label_color"]}
    if row["event"] == "closed":
        data["state_reason"] = None
    if with_issue:
        issue_row = ctx.store.one("SELECT * FROM issues WHERE id = ?", (row["issue_id"],))
        data["issue"] = shapes.issue(ctx, repo_row, issue_row)
    return data


@router.route("GET", "/repos/{owner}/{repo}/issues/events")
def list_repo_events(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    rows = ctx.store.all("SELECT * FROM issue_events WHERE repo_id = ? ORDER BY id DESC", (repo_row["id"],))
    page = ctx.paginate(rows)
    page.body = [_event(ctx, repo_row, row, with_issue=True) for row in page.body]
    return page


@router.route("GET", "/repos/{owner}/{repo}/issues/{number:int}/events")
def list_issue_events(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    rows = ctx.store.all("SELECT * FROM issue_events WHERE issue_id = ? ORDER BY id", (issue["id"],))
    page = ctx.paginate(rows)
    page.body = [_event(ctx, repo_row, row, with_issue=False) for row in page.body]
    return page
