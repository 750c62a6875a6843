"""Label endpoints: repository labels CRUD, and an issue's labels (add, set, remove one, remove all)."""

from __future__ import annotations

import re
import sqlite3

from .. import events, shapes
from ..context import RequestContext
from ..errors import HubError, invalid, missing_field, not_found
from ..routing import Response, Router
from .issues import ensure_labels, get_issue, label_names, set_labels, touch

# Label names may contain "/"; PyGithub does not always percent-encode it, so
# the name is the rest of the path.
router = Router()
_COLOR = re.compile(r"^[0-9a-fA-F]{6}$")


def _color(value: object) -> str:
    text = str(value).lstrip("#") if value is not None else ""
    if not _COLOR.match(text):
        raise invalid("Label", "color", value=value)
    return text.lower()


def _get_label(ctx: RequestContext, repo_id: int, name: str) -> sqlite3.Row:
    row = ctx.store.one("SELECT * FROM labels WHERE repo_id = ? AND name = ?", (repo_id, name))
    if row is None:
        raise not_found()
    return row


@router.route("GET", "/repos/{owner}/{repo}/labels")
def list_labels(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    rows = ctx.store.all("SELECT * FROM labels WHERE repo_id = ? ORDER BY name COLLATE NOCASE", (repo_row["id"],))
    return ctx.paginate([shapes.label(ctx.urls, repo_row["full_name"], row) for row in rows])


@router.route("POST", "/repos/{owner}/{repo}/labels")
def create_label(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    data = ctx.json_object()
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise missing_field("Label", "name")
    color = _color(data.get("color", "ededed"))
    if ctx.store.one("SELECT 1 FROM labels WHERE repo_id = ? AND name = ?", (repo_row["id"], name.strip())):
        raise invalid("Label", "name", code="already_exists", value=name)
    label_id = ctx.store.insert(
        "INSERT INTO labels (repo_id, name, color, description) VALUES (?, ?, ?, ?)",
        (repo_row["id"], name.strip(), color, data.get("description")),
    )
    row = ctx.store.one("SELECT * FROM labels WHERE id = ?", (label_id,))
    events.label(ctx, repo_row, row, "created")
    body = shapes.label(ctx.urls, repo_row["full_name"], row)
    return Response(201, body, {"Location": body["url"]})


@router.route("GET", "/repos/{owner}/{repo}/labels/{name:path}")
def get_label(ctx: RequestContext, owner: str, repo: str, name: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    return Response(200, shapes.label(ctx.urls, repo_row["full_name"], _get_label(ctx, repo_row["id"], name)))


@router.route("PATCH", "/repos/{owner}/{repo}/labels/{name:path}")
def update_label(ctx: RequestContext, owner: str, repo: str, name: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = _get_label(ctx, repo_row["id"], name)
    data = ctx.json_object()
    new_name = data.get("new_name", data.get("name", row["name"]))
    if not isinstance(new_name, str) or not new_name.strip():
        raise invalid("Label", "name", value=new_name)
    clash = ctx.store.one("SELECT id FROM labels WHERE repo_id = ? AND name = ?", (repo_row["id"], new_name.strip()))
    if clash is not None and clash["id"] != row["id"]:
        raise invalid("Label", "name", code="already_exists", value=new_name)
    color = _color(data["color"]) if "color" in data else row["color"]
    description = data.get("description", row["description"])
    ctx.store.execute(
        "UPDATE labels SET name = ?, color = ?, description = ? WHERE id = ?",
        (new_name.strip(), color, description, row["id"]),
    )
    old, row = row, ctx.store.one("SELECT * FROM labels WHERE id = ?", (row["id"],))
    changed = {key: {"from": old[key] or ""} for key in ("name", "color", "description") if old[key] != row[key]}
    if changed:
        events.label(ctx, repo_row, row, "edited", changes=changed)
    return Response(200, shapes.label(ctx.urls, repo_row["full_name"], row))


@router.route("DELETE", "/repos/{owner}/{repo}/labels/{name:path}")
def delete_label(ctx: RequestContext, owner: str, repo: str, name: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    row = _get_label(ctx, repo_row["id"], name)
    events.label(ctx, repo_row, row, "deleted")
    ctx.store.execute("DELETE FROM issue_labels WHERE label_id = ?", (row["id"],))
    ctx.store.execute("DELETE FROM labels WHERE id = ?", (row["id"],))
    return Response(204)


def _issue_labels(ctx: RequestContext, repo_row: sqlite3.Row, issue_id: int) -> list[dict]:
    rows = ctx.store.all(
        "SELECT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ? ORDER BY l.name",
        (issue_id,),
    )
    return [shapes.label(ctx.urls, repo_row["full_name"], row) for row in rows]


def _requested(ctx: RequestContext) -> list[str]:
    data = ctx.json()
    if isinstance(data, dict):
        data = data.get("labels", [])
    return label_names(data)


@router.route("GET", "/repos/{owner}/{repo}/issues/{number:int}/labels")
def list_issue_labels(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    return ctx.paginate(_issue_labels(ctx, repo_row, issue["id"]))


@router.route("POST", "/repos/{owner}/{repo}/issues/{number:int}/labels")
def add_issue_labels(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    before = events.issue_label_ids(ctx, issue["id"])
    for label_id in ensure_labels(ctx, repo_row["id"], _requested(ctx)):
        ctx.store.execute(
            "INSERT OR IGNORE INTO issue_labels (issue_id, label_id) VALUES (?, ?)", (issue["id"], label_id)
        )
    touch(ctx, issue["id"])
    events.labels_changed(ctx, repo_row, issue["id"], before)
    return Response(200, _issue_labels(ctx, repo_row, issue["id"]))


@router.route("PUT", "/repos/{owner}/{repo}/issues/{number:int}/labels")
def set_issue_labels(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    before = events.issue_label_ids(ctx, issue["id"])
    set_labels(ctx, repo_row["id"], issue["id"], _requested(ctx))
    touch(ctx, issue["id"])
    events.labels_changed(ctx, repo_row, issue["id"], before)
    return Response(200, _issue_labels(ctx, repo_row, issue["id"]))


@router.route("DELETE", "/repos/{owner}/{repo}/issues/{number:int}/labels/{name:path}")
def remove_issue_label(ctx: RequestContext, owner: str, repo: str, number: int, name: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    before = events.issue_label_ids(ctx, issue["id"])
    cur = ctx.store.execute(
        "DELETE FROM issue_labels WHERE issue_id = ? AND label_id = (SELECT id FROM labels WHERE repo_id = ? AND name = ?)",
        (issue["id"], repo_row["id"], name),
    )
    if cur.rowcount == 0:
        raise HubError(404, "Label does not exist")
    touch(ctx, issue["id"])
    events.labels_changed(ctx, repo_row, issue["id"], before)
    return Response(200, _issue_labels(ctx, repo_row, issue["id"]))


@router.route("DELETE", "/repos/{owner}/{repo}/issues/{number:int}/labels")
def remove_all_issue_labels(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = ctx.repo(owner, repo)
    issue = get_issue(ctx, repo_row, number)
    before = events.issue_label_ids(ctx, issue["id"])
    ctx.store.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue["id"],))
    touch(ctx, issue["id"])
    events.labels_changed(ctx, repo_row, issue["id"], before)
    return Response(204)
