"""Commit endpoints: get and list commits, commit statuses (create, list, combined).

The combined status pages its ``statuses`` with ``per_page``/``page`` and a
``Link`` header; ``state`` and ``total_count`` cover all of them.
"""

from __future__ import annotations

import sqlite3

from .. import shapes
from ..context import RequestContext
from ..errors import invalid, missing_field, unprocessable
from ..git import GitRepo
from ..limits import MAX_STATUS_DESCRIPTION, check_length
from ..routing import Response, Router
from ..timestamps import iso

router = Router()
STATES = ("error", "failure", "pending", "success")


def resolve(ctx: RequestContext, repo_row: sqlite3.Row, ref: str) -> str:
    """The commit sha ``ref`` names in this repository, or GitHub's 422."""
    sha = GitRepo(ctx.store, repo_row["id"]).resolve_commit(ref)
    if sha is None:
        raise unprocessable(f"No commit found for SHA: {ref}")
    return sha


@router.route("GET", "/repos/{owner}/{repo}/commits")
def list_commits(ctx: RequestContext, owner: str, repo: str) -> Response:
    row = ctx.repo(owner, repo)
    git = GitRepo(ctx.store, row["id"])
    start = resolve(ctx, row, ctx.arg("sha") or row["default_branch"])
    return ctx.paginate([shapes.commit(ctx.urls, row, info) for info in git.history(start)])


def _statuses(ctx: RequestContext, repo_row: sqlite3.Row, sha: str) -> list[sqlite3.Row]:
    return ctx.store.all("SELECT * FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id DESC", (repo_row["id"], sha))


@router.route("POST", "/repos/{owner}/{repo}/statuses/{sha}")
def create_status(ctx: RequestContext, owner: str, repo: str, sha: str) -> Response:
    row = ctx.repo(owner, repo)
    data = ctx.json_object()
    state = data.get("state")
    if state is None:
        raise missing_field("Status", "state")
    if state not in STATES:
        raise invalid("Status", "state", value=state)
    commit_sha = resolve(ctx, row, sha)
    context = data.get("context") or "default"
    description = data.get("description")
    check_length("Status", "description", None if description is None else str(description), MAX_STATUS_DESCRIPTION)
    now = iso()
    status_id = ctx.store.insert(
        "INSERT INTO statuses (repo_id, sha, state, target_url, description, context, creator_id, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row["id"], commit_sha, state, data.get("target_url"), description, str(context), ctx.caller.user_id, now, now),
    )
    status = ctx.store.one("SELECT * FROM statuses WHERE id = ?", (status_id,))
    body = shapes.status(ctx.urls, ctx.store, row, status)
    return Response(201, body, {"Location": body["url"]})


@router.route("GET", "/repos/{owner}/{repo}/commits/{ref:path}/statuses")
def list_statuses(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    row = ctx.repo(owner, repo)
    statuses = _statuses(ctx, row, resolve(ctx, row, ref))
    return ctx.paginate([shapes.status(ctx.urls, ctx.store, row, s) for s in statuses])


@router.route("GET", "/repos/{owner}/{repo}/statuses/{ref:path}")
def list_statuses_legacy(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    return list_statuses(ctx, owner, repo, ref)


def combined_state(states: list[str]) -> str:
    if any(s in ("error", "failure") for s in states):
        return "failure"
    if not states or "pending" in states:
        return "pending"
    return "success"


@router.route("GET", "/repos/{owner}/{repo}/commits/{ref:path}/status")
def combined_status(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    row = ctx.repo(owner, repo)
    sha = resolve(ctx, row, ref)
    latest: dict[str, sqlite3.Row] = {}
    for status in _statuses(ctx, row, sha):
        latest.setdefault(status["context"], status)
    statuses = sorted(latest.values(), key=lambda s: s["id"])
    page = ctx.paginate(statuses)  # per_page/page choose which of the latest statuses are listed
    bodies = []
    for status in page.body:
        body = shapes.status(ctx.urls, ctx.store, row, status)
        body.pop("creator")
        bodies.append(body)
    api = ctx.urls.repo_api(row["full_name"])
    page.body = {
        "state": combined_state([s["state"] for s in statuses]),
        "statuses": bodies,
        "sha": sha,
        "total_count": len(statuses),
        "repository": shapes.simple_repo(ctx, row),
        "commit_url": f"{api}/commits/{sha}",
        "url": f"{api}/commits/{sha}/status",
    }
    return page


# Last: a ref may contain "/", so this pattern would swallow the ones above.
@router.route("GET", "/repos/{owner}/{repo}/commits/{ref:path}")
def get_commit(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    row = ctx.repo(owner, repo)
    info = GitRepo(ctx.store, row["id"]).commit(resolve(ctx, row, ref))
    assert info is not None
    return Response(200, shapes.commit(ctx.urls, row, info))
