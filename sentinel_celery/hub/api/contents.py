"""Repository contents: get a file or directory, create or update a file, delete a file.

``Accept: application/vnd.github.raw`` on a file answers its bytes instead of JSON;
``Accept: application/vnd.github.object`` on a directory answers one object whose
``entries`` are what the default array would be.

Writes are compare-and-swap on the file's blob ``sha``, as on GitHub: updating
or deleting an existing file without ``sha`` → 422, with a stale ``sha`` →
409; a ``sha`` given for a file that does not exist is ignored and the file
created (201). Each write makes a real commit on the branch (default: the repository's
default branch), all inside the request's transaction, so of two writers that
read the same ``sha`` exactly one wins.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
import time
from typing import Any

from .. import events, shapes
from ..apiversion import V2026_03_10
from ..context import RequestContext
from ..errors import HubError, invalid, missing_field, not_found
from ..git import GitRepo, Signature, TreeEntry
from ..routing import Response, Router

router = Router()


def signature(ctx: RequestContext, data: Any) -> Signature:
    """A commit signature from a ``{"name", "email"}`` object, else the caller's."""
    login = ctx.store.user(ctx.caller.user_id)["login"]
    name, email = login, f"{login}@users.noreply.hub.local"
    if isinstance(data, dict):
        name = str(data.get("name") or name)
        email = str(data.get("email") or email)
    return Signature(name, email, int(time.time()))


def _branch_head(ctx: RequestContext, git: GitRepo, repo_row: sqlite3.Row, branch: str | None) -> tuple[str, str]:
    branch = branch or repo_row["default_branch"]
    head = git.ref(f"refs/heads/{branch}")
    if head is None:
        raise HubError(404, f"Branch {branch} not found")
    return branch, head


def _check_sha(path: str, current: TreeEntry | None, given: Any, *, required: bool) -> None:
    if current is None:  # nothing to compare with: GitHub ignores a sha given for a new file and creates it
        return
    if current.type != "blob":
        raise invalid("Content", "path", value=path, message=f"{path} is a directory")
    if not given:
        if required:
            raise HubError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
        return
    if given != current.sha:
        raise HubError(409, f"{path} does not match {given}")


@router.route("GET", "/repos/{owner}/{repo}/contents")
def get_root_contents(ctx: RequestContext, owner: str, repo: str) -> Response:
    return get_contents(ctx, owner, repo, "")


@router.route("GET", "/repos/{owner}/{repo}/contents/{path:path}")
def get_contents(ctx: RequestContext, owner: str, repo: str, path: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    git = GitRepo(ctx.store, repo_row["id"])
    ref_name = ctx.arg("ref") or repo_row["default_branch"]
    commit_sha = git.resolve_commit(ref_name)
    if commit_sha is None:
        raise HubError(404, f"No commit found for the ref {ref_name}")
    info = git.commit(commit_sha)
    assert info is not None
    path = path.strip("/")
    entry = git.lookup(info.tree, path)
    if entry is None:
        raise not_found()
    if entry.type == "blob":
        data = git.typed(entry.sha, "blob") or b""
        if "vnd.github.raw" in ctx.headers.get("accept", ""):
            return Response(200, data, content_type="application/vnd.github.raw; charset=utf-8")
        return Response(200, shapes.content_file(ctx.urls, repo_row, path, entry, data, ref_name))
    items = []
    for child in sorted(git.tree(entry.sha) or [], key=lambda e: e.name):
        child_path = f"{path}/{child.name}" if path else child.name
        size = len(git.typed(child.sha, "blob") or b"") if child.type == "blob" else 0
        item = shapes.content_entry(ctx.urls, repo_row, child_path, child, size, ref_name)
        if item["type"] == "submodule" and ctx.api_version < V2026_03_10:
            item["type"] = "file"  # how listings showed submodules before 2026-03-10
        items.append(item)
    if "vnd.github.object" in ctx.headers.get("accept", ""):
        return Response(200, shapes.content_directory(ctx.urls, repo_row, path, entry, items, ref_name))
    return Response(200, items)


def _commit_change(
    ctx: RequestContext,
    repo_row: sqlite3.Row,
    git: GitRepo,
    branch: str,
    head: str,
    path: str,
    new: TreeEntry | None,
    message: str,
) -> str:
    data = ctx.json_object()
    info = git.commit(head)
    assert info is not None
    tree = git.with_path(info.tree, path, new)
    committer = signature(ctx, data.get("committer"))
    author = signature(ctx, data.get("author")) if data.get("author") else committer
    sha = git.make_commit(tree, [head], message, author, committer)
    git.set_ref(f"refs/heads/{branch}", sha)
    ctx.store.touch_repo(repo_row["id"], pushed=True)
    events.push(ctx, ctx.store.repo_by_id(repo_row["id"]), f"refs/heads/{branch}", head, sha)
    return sha


def _message(data: dict[str, Any]) -> str:
    message = data.get("message")
    if not isinstance(message, str) or not message:
        raise missing_field("Content", "message")
    return message


@router.route("PUT", "/repos/{owner}/{repo}/contents/{path:path}")
def put_contents(ctx: RequestContext, owner: str, repo: str, path: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    data = ctx.json_object()
    path = path.strip("/")
    if not path:
        raise not_found()
    message = _message(data)
    if not isinstance(data.get("content"), str):
        raise missing_field("Content", "content")
    try:
        content = base64.b64decode("".join(data["content"].split()), validate=True)
    except (binascii.Error, ValueError):
        raise HubError(422, "content is not valid Base64") from None
    git = GitRepo(ctx.store, repo_row["id"])
    branch, head = _branch_head(ctx, git, repo_row, data.get("branch"))
    head_info = git.commit(head)
    assert head_info is not None
    current = git.lookup(head_info.tree, path)
    _check_sha(path, current, data.get("sha"), required=True)
    blob_sha = git.put("blob", content)
    entry = TreeEntry("100644", path.rsplit("/", 1)[-1], blob_sha)
    commit_sha = _commit_change(ctx, repo_row, git, branch, head, path, entry, message)
    content_body = shapes.content_entry(ctx.urls, repo_row, path, entry, len(content), branch)
    commit_info = git.commit(commit_sha)
    assert commit_info is not None
    body = {"content": content_body, "commit": shapes.git_commit(ctx.urls, repo_row, commit_info)}
    return Response(201 if current is None else 200, body)


@router.route("DELETE", "/repos/{owner}/{repo}/contents/{path:path}")
def delete_contents(ctx: RequestContext, owner: str, repo: str, path: str) -> Response:
    repo_row = ctx.repo(owner, repo)
    data = ctx.json_object()
    path = path.strip("/")
    message = _message(data)
    git = GitRepo(ctx.store, repo_row["id"])
    branch, head = _branch_head(ctx, git, repo_row, data.get("branch"))
    head_info = git.commit(head)
    assert head_info is not None
    current = git.lookup(head_info.tree, path) if path else None
    if current is None:
        raise not_found()
    _check_sha(path, current, data.get("sha"), required=True)
    commit_sha = _commit_change(ctx, repo_row, git, branch, head, path, None, message)
    commit_info = git.commit(commit_sha)
    assert commit_info is not None
    return Response(200, {"content": None, "commit": shapes.git_commit(ctx.urls, repo_row, commit_info)})
