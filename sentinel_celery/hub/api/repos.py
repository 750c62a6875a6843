"""Repository endpoints: the repository itself, branches, collaborators and assignees.

Adding a collaborator takes effect at once (GitHub sends an invitation the
user must accept); an unknown login is created as a user, since the hub has
no sign-up.
"""

from __future__ import annotations

from .. import shapes
from ..context import RequestContext
from ..errors import HubError, invalid, not_found
from ..git import GitRepo
from ..routing import Response, Router

router = Router()
_PERMISSIONS = {"pull": "pull", "triage": "triage", "push": "push", "maintain": "maintain", "admin": "admin"}
_RANK = ["pull", "triage", "push", "maintain", "admin"]


@router.route("GET", "/repos/{owner}/{repo}")
def get_repo(ctx: RequestContext, owner: str, repo: str) -> Response:
    return Response(200, shapes.repo(ctx, ctx.repo(owner, repo)))


@router.route("GET", "/repositories/{repo_id:int}")
def get_repo_by_id(ctx: RequestContext, repo_id: int) -> Response:
    row = ctx.store.one("SELECT owner_id, name FROM repos WHERE id = ?", (repo_id,))
    if row is None:
        raise not_found()
    return get_repo(ctx, ctx.store.user(row["owner_id"])["login"], row["name"])


def _branch(ctx: RequestContext, repo_row, name: str, sha: str) -> dict:
    info = GitRepo(ctx.store, repo_row["id"]).commit(sha)
    assert info is not None
    api = ctx.urls.repo_api(repo_row["full_name"])
    return {
        "name": name,
        "commit": shapes.commit(ctx.urls, repo_row, info),
        "_links": {"self": f"{api}/branches/{name}", "html": f"{ctx.urls.repo_web(repo_row['full_name'])}/tree/{name}"},
        "protected": False,
        "protection": {
            "enabled": False,
            "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
        },
        "protection_url": f"{api}/branches/{name}/protection",
    }


@router.route("GET", "/repos/{owner}/{repo}/branches")
def list_branches(ctx: RequestContext, owner: str, repo: str) -> Response:
    row = ctx.repo(owner, repo)
    api = ctx.urls.repo_api(row["full_name"])
    items = [
        {"name": name[len("refs/heads/") :], "commit": {"sha": sha, "url": f"{api}/commits/{sha}"}, "protected": False}
        for name, sha in GitRepo(ctx.store, row["id"]).refs("refs/heads/")
    ]
    return ctx.paginate(items)


@router.route("GET", "/repos/{owner}/{repo}/branches/{branch:path}")
def get_branch(ctx: RequestContext, owner: str, repo: str, branch: str) -> Response:
    row = ctx.repo(owner, repo)
    sha = GitRepo(ctx.store, row["id"]).ref(f"refs/heads/{branch}")
    if sha is None:
        raise HubError(404, "Branch not found")
    return Response(200, _branch(ctx, row, branch, sha))


def _collaborators(ctx: RequestContext, repo_id: int):
    return ctx.store.all(
        "SELECT u.*, c.permission FROM users u JOIN collaborators c ON c.user_id = u.id WHERE c.repo_id = ? ORDER BY u.id",
        (repo_id,),
    )


def _permissions(permission: str) -> dict[str, bool]:
    rank = _RANK.index(permission) if permission in _RANK else -1
    return {name: rank >= _RANK.index(name) for name in _RANK}


@router.route("GET", "/repos/{owner}/{repo}/collaborators")
def list_collaborators(ctx: RequestContext, owner: str, repo: str) -> Response:
    row = ctx.repo(owner, repo)
    items = []
    for user in _collaborators(ctx, row["id"]):
        body = shapes.user(ctx.urls, user) or {}
        body["permissions"] = _permissions(user["permission"])
        body["role_name"] = {"push": "write", "pull": "read"}.get(user["permission"], user["permission"])
        items.append(body)
    return ctx.paginate(items)


@router.route("GET", "/repos/{owner}/{repo}/collaborators/{username}")
def check_collaborator(ctx: RequestContext, owner: str, repo: str, username: str) -> Response:
    row = ctx.repo(owner, repo)
    user = ctx.store.user_by_login(username)
    if user is None or ctx.store.permission(row["id"], user["id"]) is None:
        raise not_found()
    return Response(204)


@router.route("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission")
def collaborator_permission(ctx: RequestContext, owner: str, repo: str, username: str) -> Response:
    row = ctx.repo(owner, repo)
    user = ctx.store.user_by_login(username)
    if user is None:
        raise not_found()
    permission = ctx.store.permission(row["id"], user["id"])
    level = {"admin": "admin", "maintain": "write", "push": "write", "triage": "read", "pull": "read"}.get(
        permission or "", "none"
    )
    role = {"push": "write", "pull": "read"}.get(permission or "", permission or "none")
    body = shapes.user(ctx.urls, user) or {}
    body.update(permissions=_permissions(permission or ""), role_name=role)
    return Response(200, {"permission": level, "role_name": role, "user": body})


@router.route("PUT", "/repos/{owner}/{repo}/collaborators/{username}")
def add_collaborator(ctx: RequestContext, owner: str, repo: str, username: str) -> Response:
    row = ctx.repo(owner, repo)
    ctx.require_admin()
    permission = ctx.json_object().get("permission", "push")
    if permission not in _PERMISSIONS:
        raise invalid("Repository", "permission", value=permission)
    user_id = ctx.store.ensure_user(username)
    ctx.store.add_collaborator(row["id"], user_id, _PERMISSIONS[permission])
    return Response(204)


@router.route("DELETE", "/repos/{owner}/{repo}/collaborators/{username}")
def remove_collaborator(ctx: RequestContext, owner: str, repo: str, username: str) -> Response:
    row = ctx.repo(owner, repo)
    ctx.require_admin()
    user = ctx.store.user_by_login(username)
    if user is not None and user["id"] != row["owner_id"]:
        ctx.store.execute("DELETE FROM collaborators WHERE repo_id = ? AND user_id = ?", (row["id"], user["id"]))
    return Response(204)


def assignable(ctx: RequestContext, repo_row, login: str):
    """The user row if ``login`` may be assigned issues in this repository (push access or more)."""
    user = ctx.store.user_by_login(login)
    if user is None:
        return None
    permission = ctx.store.permission(repo_row["id"], user["id"])
    return user if permission in ("push", "maintain", "admin", "triage") else None


@router.route("GET", "/repos/{owner}/{repo}/assignees")
def list_assignees(ctx: RequestContext, owner: str, repo: str) -> Response:
    row = ctx.repo(owner, repo)
    users = [u for u in _collaborators(ctx, row["id"]) if u["permission"] != "pull"]
    return ctx.paginate([shapes.user(ctx.urls, u) for u in users])


@router.route("GET", "/repos/{owner}/{repo}/assignees/{username}")
def check_assignee(ctx: RequestContext, owner: str, repo: str, username: str) -> Response:
    row = ctx.repo(owner, repo)
    if assignable(ctx, row, username) is None:
        raise not_found()
    return Response(204)
