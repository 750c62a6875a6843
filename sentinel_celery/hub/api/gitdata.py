"""Git data endpoints: blobs, trees, commits and refs.

Enough to build a commit by hand and move a branch to it. Ref updates follow
GitHub's rules: creating an existing ref → 422 "Reference already exists";
``PATCH`` without ``force`` must be a fast-forward (the new commit descends
from the old) or → 422 "Update is not a fast forward".
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
from typing import Any

from .. import events, shapes
from ..context import RequestContext
from ..errors import missing_field, not_found, unprocessable
from ..git import MODES, SHA_RE, GitRepo, TreeEntry, normalise_mode
from ..routing import Response, Router
from .contents import signature

router = Router()
_REF_NAME = re.compile(r"^refs/[^\s~^:?*\[\\]+/[^\s~^:?*\[\\]+$")


def _git(ctx: RequestContext, owner: str, repo: str) -> tuple[sqlite3.Row, GitRepo]:
    row = ctx.repo(owner, repo)
    return row, GitRepo(ctx.store, row["id"])


# blobs ---------------------------------------------------------------------
@router.route("POST", "/repos/{owner}/{repo}/git/blobs")
def create_blob(ctx: RequestContext, owner: str, repo: str) -> Response:
    row, git = _git(ctx, owner, repo)
    data = ctx.json_object()
    content = data.get("content")
    if not isinstance(content, str):
        raise missing_field("Blob", "content")
    encoding = data.get("encoding", "utf-8")
    if encoding == "base64":
        try:
            raw = base64.b64decode("".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise unprocessable("content is not valid Base64") from None
    elif encoding in ("utf-8", "utf8"):
        raw = content.encode("utf-8")
    else:
        raise unprocessable(f"encoding must be utf-8 or base64, not {encoding}")
    sha = git.put("blob", raw)
    url = f"{ctx.urls.repo_api(row['full_name'])}/git/blobs/{sha}"
    return Response(201, {"url": url, "sha": sha}, {"Location": url})


@router.route("GET", "/repos/{owner}/{repo}/git/blobs/{sha}")
def get_blob(ctx: RequestContext, owner: str, repo: str, sha: str) -> Response:
    row, git = _git(ctx, owner, repo)
    data = git.typed(sha.lower(), "blob")
    if data is None:
        raise not_found()
    return Response(200, shapes.blob(ctx.urls, row, sha.lower(), data))


# trees ---------------------------------------------------------------------
def _tree_response(ctx: RequestContext, row: sqlite3.Row, git: GitRepo, sha: str, recursive: bool) -> dict[str, Any]:
    pairs = git.walk(sha) if recursive else [(e.name, e) for e in git.tree(sha) or []]
    entries = [(path, e, len(git.typed(e.sha, "blob") or b"") if e.type == "blob" else None) for path, e in pairs]
    return shapes.tree(ctx.urls, row, sha, entries)


@router.route("POST", "/repos/{owner}/{repo}/git/trees")
def create_tree(ctx: RequestContext, owner: str, repo: str) -> Response:
    row, git = _git(ctx, owner, repo)
    data = ctx.json_object()
    items = data.get("tree")
    if not isinstance(items, list):
        raise missing_field("Tree", "tree")
    base = data.get("base_tree")
    if base is not None and git.tree(str(base)) is None:
        raise unprocessable(f"base_tree {base} is not a valid tree oid")
    sha: str | None = base
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"].strip("/"):
            raise unprocessable(f"tree.{index}.path is required")
        mode = normalise_mode(str(item.get("mode", "100644")))
        if mode not in MODES:
            raise unprocessable(f"tree.{index}.mode must be one of {sorted(MODES)}")
        kind = item.get("type", MODES[mode])
        if "content" in item and item["content"] is not None:
            object_sha: str | None = git.put("blob", str(item["content"]).encode("utf-8"))
        else:
            object_sha = item.get("sha")
            if object_sha is not None and kind != "commit" and git.typed(str(object_sha), kind) is None:
                raise unprocessable(f"tree.sha {object_sha} is not a valid {kind}")
        new = TreeEntry(mode, "", str(object_sha)) if object_sha is not None else None
        sha = git.with_path(sha, item["path"], new)
    if sha is None:
        sha = git.put("tree", b"")
    body = _tree_response(ctx, row, git, sha, recursive=False)
    return Response(201, body, {"Location": body["url"]})


@router.route("GET", "/repos/{owner}/{repo}/git/trees/{sha}")
def get_tree(ctx: RequestContext, owner: str, repo: str, sha: str) -> Response:
    row, git = _git(ctx, owner, repo)
    tree_sha = sha.lower()
    if git.tree(tree_sha) is None:
        commit_sha = git.resolve_commit(sha)  # GitHub also accepts a commit or branch here
        info = git.commit(commit_sha) if commit_sha else None
        if info is None:
            raise not_found()
        tree_sha = info.tree
    recursive = ctx.arg("recursive") not in (None, "", "0", "false")
    return Response(200, _tree_response(ctx, row, git, tree_sha, recursive))


# commits -------------------------------------------------------------------
@router.route("POST", "/repos/{owner}/{repo}/git/commits")
def create_commit(ctx: RequestContext, owner: str, repo: str) -> Response:
    row, git = _git(ctx, owner, repo)
    data = ctx.json_object()
    message = data.get("message")
    if not isinstance(message, str):
        raise missing_field("Commit", "message")
    tree = data.get("tree")
    if not isinstance(tree, str) or git.tree(tree) is None:
        raise unprocessable("Tree SHA does not exist")
    parents = data.get("parents", [])
    if not isinstance(parents, list) or any(not isinstance(p, str) or git.commit(p) is None for p in parents):
        raise unprocessable("Parent SHA does not exist or is not a commit object")
    committer = signature(ctx, data.get("committer") or data.get("author"))
    author = signature(ctx, data.get("author")) if data.get("author") else committer
    sha = git.make_commit(tree, parents, message, author, committer)
    info = git.commit(sha)
    assert info is not None
    body = shapes.git_commit(ctx.urls, row, info)
    return Response(201, body, {"Location": body["url"]})


@router.route("GET", "/repos/{owner}/{repo}/git/commits/{sha}")
def get_git_commit(ctx: RequestContext, owner: str, repo: str, sha: str) -> Response:
    row, git = _git(ctx, owner, repo)
    info = git.commit(sha.lower())
    if info is None:
        raise not_found()
    return Response(200, shapes.git_commit(ctx.urls, row, info))


# refs ----------------------------------------------------------------------
def _ref_body(ctx: RequestContext, row: sqlite3.Row, git: GitRepo, name: str, sha: str) -> dict[str, Any]:
    found = git.get(sha)
    return shapes.ref(ctx.urls, row, name, sha, found[0] if found else "commit")


def _full_ref(ref: str) -> str:
    ref = ref.strip("/")
    return ref if ref.startswith("refs/") else f"refs/{ref}"


@router.route("GET", "/repos/{owner}/{repo}/git/refs")
def list_refs(ctx: RequestContext, owner: str, repo: str) -> Response:
    row, git = _git(ctx, owner, repo)
    return ctx.paginate([_ref_body(ctx, row, git, name, sha) for name, sha in git.refs()])


@router.route("GET", "/repos/{owner}/{repo}/git/matching-refs/{ref:path}")
def matching_refs(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    row, git = _git(ctx, owner, repo)
    prefix = _full_ref(ref) if ref.strip("/") else "refs/"
    return ctx.paginate([_ref_body(ctx, row, git, name, sha) for name, sha in git.refs(prefix)])


@router.route("GET", "/repos/{owner}/{repo}/git/ref/{ref:path}")
def get_ref(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    row, git = _git(ctx, owner, repo)
    name = _full_ref(ref)
    sha = git.ref(name)
    if sha is None:
        raise not_found()
    return Response(200, _ref_body(ctx, row, git, name, sha))


@router.route("GET", "/repos/{owner}/{repo}/git/refs/{ref:path}")
def get_refs_legacy(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    """The older spelling: one ref when the name matches exactly, else the refs it prefixes."""
    row, git = _git(ctx, owner, repo)
    name = _full_ref(ref)
    sha = git.ref(name)
    if sha is not None:
        return Response(200, _ref_body(ctx, row, git, name, sha))
    matches = git.refs(name.rstrip("/") + "/")
    if not matches:
        raise not_found()
    return ctx.paginate([_ref_body(ctx, row, git, n, s) for n, s in matches])


@router.route("POST", "/repos/{owner}/{repo}/git/refs")
def create_ref(ctx: RequestContext, owner: str, repo: str) -> Response:
    row, git = _git(ctx, owner, repo)
    data = ctx.json_object()
    name, sha = data.get("ref"), data.get("sha")
    if not isinstance(name, str) or not name:
        raise unprocessable('Invalid request.\n\n"ref" wasn\'t supplied.')
    if not isinstance(sha, str) or not sha:
        raise unprocessable('Invalid request.\n\n"sha" wasn\'t supplied.')
    if not _REF_NAME.match(name) or ".." in name or name.endswith((".lock", "/", ".")):
        raise unprocessable(f"{name} is not a valid ref name.")
    if git.ref(name) is not None:
        raise unprocessable("Reference already exists")
    if not SHA_RE.match(sha) or git.get(sha) is None:
        raise unprocessable("Object does not exist")
    git.set_ref(name, sha)
    ctx.store.touch_repo(row["id"], pushed=True)
    events.push(ctx, ctx.store.repo_by_id(row["id"]), name, None, sha)
    body = _ref_body(ctx, row, git, name, sha)
    return Response(201, body, {"Location": body["url"]})


@router.route("PATCH", "/repos/{owner}/{repo}/git/refs/{ref:path}")
def update_ref(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    row, git = _git(ctx, owner, repo)
    data = ctx.json_object()
    name = _full_ref(ref)
    sha = data.get("sha")
    if not isinstance(sha, str) or not sha:
        raise unprocessable('Invalid request.\n\n"sha" wasn\'t supplied.')
    current = git.ref(name)
    if current is None:
        raise unprocessable("Reference does not exist")
    if not SHA_RE.match(sha) or git.get(sha) is None:
        raise unprocessable("Object does not exist")
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise unprocessable("Invalid request.\n\nFor 'properties/force', it is not a boolean.")
    if not force and current != sha and not git.is_ancestor(current, sha):
        raise unprocessable("Update is not a fast forward")
    git.set_ref(name, sha)
    ctx.store.touch_repo(row["id"], pushed=True)
    if current != sha:
        events.push(ctx, ctx.store.repo_by_id(row["id"]), name, current, sha)
    return Response(200, _ref_body(ctx, row, git, name, sha))


@router.route("DELETE", "/repos/{owner}/{repo}/git/refs/{ref:path}")
def delete_ref(ctx: RequestContext, owner: str, repo: str, ref: str) -> Response:
    row, git = _git(ctx, owner, repo)
    name = _full_ref(ref)
    current = git.ref(name)
    if not git.delete_ref(name):
        raise unprocessable("Reference does not exist")
    events.push(ctx, row, name, current, None)
    return Response(204)
