"""Check run endpoints: create, update, get, and list for a commit.

Writing check runs needs an app-installation token; a personal token gets
403 "You must authenticate via a GitHub App.", as on GitHub. Reading works
with any token that can see the repository.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .. import shapes
from ..context import RequestContext
from ..errors import DOCS_URL, HubError, invalid, missing_field, not_found
from ..routing import Response, Router
from ..timestamps import iso, parse_iso
from .commits import resolve

router = Router()
STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
CONCLUSIONS = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out")


def _require_app(ctx: RequestContext, operation: str) -> None:
    if not ctx.caller.spec.is_app:
        raise HubError(
            403, "You must authenticate via a GitHub App.", documentation_url=f"{DOCS_URL}/checks/runs#{operation}"
        )


def _time(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    try:
        return iso(parse_iso(str(value)).timestamp())
    except ValueError:
        raise invalid("CheckRun", field, value=value) from None


def _fields(data: dict[str, Any], current: sqlite3.Row | None) -> dict[str, Any]:
    """Column values from a create/update body, with GitHub's status/conclusion rules."""
    out: dict[str, Any] = {}
    for field in ("name", "details_url", "external_id"):
        if field in data:
            if field == "name" and (not isinstance(data[field], str) or not data[field]):
                raise invalid("CheckRun", "name", value=data[field])
            out[field] = data[field]
    status = data.get("status")
    if status is not None and status not in STATUSES:
        raise invalid("CheckRun", "status", value=status)
    conclusion = data.get("conclusion")
    if conclusion is not None and conclusion not in CONCLUSIONS:
        raise invalid("CheckRun", "conclusion", value=conclusion)
    if status == "completed" and conclusion is None and (current is None or current["conclusion"] is None):
        raise missing_field("CheckRun", "conclusion")
    if conclusion is not None:
        status = "completed"
    if status is not None:
        out["status"] = status
    if conclusion is not None:
        out["conclusion"] = conclusion
    if "started_at" in data:
        out["started_at"] = _time(data, "started_at")
    if "completed_at" in data:
        out["completed_at"] = _time(data, "completed_at")
    if out.get("status") == "completed" and not out.get("completed_at") and not (current and current["completed_at"]):
        out["completed_at"] = iso()
    output = data.get("output")
    if output is not None:
        if not isinstance(output, dict):
            raise invalid("CheckRun", "output", value=output)
        for key in ("title", "summary", "text"):
            if key in output:
                out[f"output_{key}"] = output[key]
    return out


def _get(ctx: RequestContext, repo_row: sqlite3.Row, run_id: int) -> sqlite3.Row:
    row = ctx.store.one("SELECT * FROM check_runs WHERE id = ? AND repo_id = ?", (run_id, repo_row["id"]))
    if row is None:
        raise not_found()
    return row


@router.route("POST", "/repos/{owner}/{repo}/check-runs")
def create_check_run(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    _require_app(ctx, "create-a-check-run")
    data = ctx.json_object()
    for field in ("name", "head_sha"):
        if not data.get(field):
            raise missing_field("CheckRun", field)
    head_sha = resolve(ctx, repo_row, str(data["head_sha"]))
    fields = {"status": "queued", "started_at": iso(), **_fields(data, None)}
    spec = ctx.caller.spec
    columns = ["repo_id", "head_sha", "app_id", "app_slug", *fields]
    values = [repo_row["id"], head_sha, spec.app_id, spec.app_slug, *fields.values()]
    run_id = ctx.store.insert(
        f"INSERT INTO check_runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", values
    )
    body = shapes.check_run(ctx, repo_row, _get(ctx, repo_row, run_id), spec)
    return Response(201, body, {"Location": body["url"]})


@router.route("PATCH", "/repos/{owner}/{repo}/check-runs/{run_id:int}")
def update_check_run(ctx: RequestContext, owner: str, repo: str, run_id: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    _require_app(ctx, "update-a-check-run")
    row = _get(ctx, repo_row, run_id)
    fields = _fields(ctx.json_object(), row)
    if fields:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        ctx.store.execute(f"UPDATE check_runs SET {assignments} WHERE id = ?", (*fields.values(), run_id))
    return Response(200, shapes.check_run(ctx, repo_row, _get(ctx, repo_row, run_id), ctx.caller.spec))


@router.route("GET", "/repos/{owner}/{repo}/check-runs/{run_id:int}")
def get_check_run(ctx: RequestContext, owner: str, repo: str, run_id: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    return Response(200, shapes.check_run(ctx, repo_row, _get(ctx, repo_row, run_id)))


@router.route("GET", "/repos/{owner}/{repo}/commits/{ref:path}/check-runs")
def list_check_runs(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    sha = resolve(ctx, repo_row, ref)
    sql, params = "SELECT * FROM check_runs WHERE repo_id = ? AND head_sha = ?", [repo_row["id"], sha]
    if ctx.arg("check_name"):
        sql += " AND name = ?"
        params.append(ctx.arg("check_name"))
    if ctx.arg("status"):
        sql += " AND status = ?"
        params.append(ctx.arg("status"))
    rows = ctx.store.all(sql + " ORDER BY id DESC", params)
    if ctx.arg("filter", "latest") == "latest":
        seen: set[str] = set()
        rows = [r for r in rows if not (r["name"] in seen or seen.add(r["name"]))]
    page = ctx.paginate(rows)
    page.body = {"total_count": len(rows), "check_runs": [shapes.check_run(ctx, repo_row, r) for r in page.body]}
    return page
