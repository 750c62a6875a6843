"""GitHub's JSON shapes, built from the store's rows.

Owns every response body the REST API returns: users, repositories, labels,
issues, comments, git objects and refs, commits, contents, statuses, check
runs and the rate-limit document. Field sets follow GitHub's OpenAPI
description (required fields included) so PyGithub and generated clients parse
them; ``url`` fields use the API root the request came in on and ``html_url``
the hub's own HTML view.
"""

from __future__ import annotations

import base64
import sqlite3
import urllib.parse
from typing import Any

from .auth import TokenSpec
from .context import RequestContext, Urls
from .git import CommitInfo, Signature, TreeEntry
from .store import Store
from .timestamps import iso


def node_id(kind: str, ident: Any) -> str:
    """GitHub's legacy global node id: base64 of ``"<len>:<Type><id>"``."""
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode()


def q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _reactions(url: str) -> dict[str, Any]:
    counts = dict.fromkeys(["+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes"], 0)
    return {"url": f"{url}/reactions", "total_count": 0, **counts}


# users -------------------------------------------------------------------
def user(urls: Urls, row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    login = row["login"]
    base = f"{urls.api}/users/{q(login)}"
    return {
        "login": login,
        "id": row["id"],
        "node_id": node_id("Bot" if row["type"] == "Bot" else "User", row["id"]),
        "avatar_url": f"{urls.web}/_hub/avatars/{row['id']}",
        "gravatar_id": "",
        "url": base,
        "html_url": f"{urls.web}/{q(login)}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": row["type"],
        "user_view_type": "public",
        "site_admin": False,
    }


def full_user(urls: Urls, row: sqlite3.Row, *, public_repos: int, private_repos: int) -> dict[str, Any]:
    data = user(urls, row) or {}
    data.update(
        {
            "name": row["login"],
            "company": None,
            "blog": "",
            "location": None,
            "email": None,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "notification_email": None,
            "public_repos": public_repos,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": row["created_at"],
            "updated_at": row["created_at"],
            "private_gists": 0,
            "total_private_repos": private_repos,
            "owned_private_repos": private_repos,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": True,
            "plan": {"name": "free", "space": 976562499, "collaborators": 0, "private_repos": 10000},
        }
    )
    return data


def app(urls: Urls, spec: TokenSpec, owner: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": spec.app_id,
        "slug": spec.app_slug,
        "node_id": node_id("App", spec.app_id),
        "client_id": f"Iv1.{spec.app_id:016x}",
        "owner": owner,
        "name": spec.app_slug,
        "description": "",
        "external_url": urls.web,
        "html_url": f"{urls.web}/apps/{spec.app_slug}",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "permissions": {
            "checks": "write",
            "contents": "write",
            "issues": "write",
            "metadata": "read",
            "statuses": "write",
        },
        "events": [],
    }


# repositories ------------------------------------------------------------
_REPO_URL_TEMPLATES = {
    "archive_url": "/{archive_format}{/ref}",
    "assignees_url": "/assignees{/user}",
    "blobs_url": "/git/blobs{/sha}",
    "branches_url": "/branches{/branch}",
    "collaborators_url": "/collaborators{/collaborator}",
    "comments_url": "/comments{/number}",
    "commits_url": "/commits{/sha}",
    "compare_url": "/compare/{base}...{head}",
    "contents_url": "/contents/{+path}",
    "contributors_url": "/contributors",
    "deployments_url": "/deployments",
    "downloads_url": "/downloads",
    "events_url": "/events",
    "forks_url": "/forks",
    "git_commits_url": "/git/commits{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "hooks_url": "/hooks",
    "issue_comment_url": "/issues/comments{/number}",
    "issue_events_url": "/issues/events{/number}",
    "issues_url": "/issues{/number}",
    "keys_url": "/keys{/key_id}",
    "labels_url": "/labels{/name}",
    "languages_url": "/languages",
    "merges_url": "/merges",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "pulls_url": "/pulls{/number}",
    "releases_url": "/releases{/id}",
    "stargazers_url": "/stargazers",
    "statuses_url": "/statuses/{sha}",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "tags_url": "/tags",
    "teams_url": "/teams",
    "trees_url": "/git/trees{/sha}",
}


def simple_repo(ctx: RequestContext, row: sqlite3.Row) -> dict[str, Any]:
    """The short repository object GitHub embeds in other answers (a combined status): names, owner, URLs."""
    urls, full = ctx.urls, row["full_name"]
    api = urls.repo_api(full)
    data: dict[str, Any] = {
        "id": row["id"],
        "node_id": node_id("Repository", row["id"]),
        "name": row["name"],
        "full_name": full,
        "private": bool(row["private"]),
        "owner": user(urls, ctx.store.user(row["owner_id"])),
        "html_url": urls.repo_web(full),
        "description": row["description"],
        "fork": False,
        "url": api,
    }
    data.update({key: api + suffix for key, suffix in _REPO_URL_TEMPLATES.items()})
    return data


def repo(ctx: RequestContext, row: sqlite3.Row) -> dict[str, Any]:
    """The full repository object of ``GET /repos/{owner}/{repo}``, with the caller's permissions."""
    urls, full = ctx.urls, row["full_name"]
    open_issues = ctx.store.one("SELECT COUNT(*) AS n FROM issues WHERE repo_id = ? AND state = 'open'", (row["id"],))[
        "n"
    ]
    spec = ctx.caller.spec
    push = spec.can_write
    data = simple_repo(ctx, row)
    data.update(
        {
            "git_url": f"git://{urls.web.split('://', 1)[-1]}/{full}.git",
            "ssh_url": f"git@hub.local:{full}.git",
            "clone_url": f"{urls.web}/{full}.git",
            "svn_url": urls.repo_web(full),
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "forks_count": 0,
            "forks": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 0,
            "default_branch": row["default_branch"],
            "open_issues_count": open_issues,
            "open_issues": open_issues,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": False,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if row["private"] else "public",
            "pushed_at": row["pushed_at"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "permissions": {
                "admin": spec.is_admin,
                "maintain": spec.is_admin,
                "push": push,
                "triage": push,
                "pull": True,
            },
            "allow_rebase_merge": True,
            "allow_squash_merge": True,
            "allow_merge_commit": True,
            "allow_auto_merge": False,
            "delete_branch_on_merge": False,
            "allow_forking": False,
            "web_commit_signoff_required": False,
            "license": None,
            "network_count": 0,
            "subscribers_count": 0,
            "temp_clone_token": None,
        }
    )
    return data


# labels, issues, comments ------------------------------------------------
def label(urls: Urls, full_name: str, row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "node_id": node_id("Label", row["id"]),
        "url": f"{urls.repo_api(full_name)}/labels/{q(row['name'])}",
        "name": row["name"],
        "color": row["color"],
        "default": bool(row["is_default"]),
        "description": row["description"],
        "archived_at": None,
        "archived_by": None,
    }


def author_association(store: Store, repo_row: sqlite3.Row, user_id: int) -> str:
    if user_id == repo_row["owner_id"]:
        return "OWNER"
    return "COLLABORATOR" if store.permission(repo_row["id"], user_id) else "NONE"


def issue(ctx: RequestContext, repo_row: sqlite3.Row, row: sqlite3.Row) -> dict[str, Any]:
    store, urls, full = ctx.store, ctx.urls, repo_row["full_name"]
    api = f"{urls.repo_api(full)}/issues/{row['number']}"
    labels = store.all(
        "SELECT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ? ORDER BY l.name",
        (row["id"],),
    )
    assignees = [
        user(urls, r)
        for r in store.all(
            "SELECT u.* FROM users u JOIN issue_assignees ia ON ia.user_id = u.id WHERE ia.issue_id = ? ORDER BY u.login",
            (row["id"],),
        )
    ]
    comments = store.one("SELECT COUNT(*) AS n FROM comments WHERE issue_id = ?", (row["id"],))["n"]
    return {
        "id": row["id"],
        "node_id": node_id("Issue", row["id"]),
        "url": api,
        "repository_url": urls.repo_api(full),
        "labels_url": f"{api}/labels{{/name}}",
        "comments_url": f"{api}/comments",
        "events_url": f"{api}/events",
        "html_url": f"{urls.repo_web(full)}/issues/{row['number']}",
        "number": row["number"],
        "state": row["state"],
        "state_reason": row["state_reason"],
        "title": row["title"],
        "body": row["body"],
        "user": user(urls, store.user(row["user_id"])),
        "labels": [label(urls, full, r) for r in labels],
        "assignee": assignees[0] if assignees else None,
        "assignees": assignees,
        "milestone": None,
        "locked": False,
        "active_lock_reason": None,
        "comments": comments,
        "closed_at": row["closed_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "closed_by": user(urls, store.user(row["closed_by_id"])) if row["closed_by_id"] else None,
        "author_association": author_association(store, repo_row, row["user_id"]),
        "performed_via_github_app": None,
        "reactions": _reactions(api),
        "timeline_url": f"{api}/timeline",
    }


def comment(ctx: RequestContext, repo_row: sqlite3.Row, row: sqlite3.Row, issue_number: int) -> dict[str, Any]:
    urls, full = ctx.urls, repo_row["full_name"]
    api = f"{urls.repo_api(full)}/issues/comments/{row['id']}"
    return {
        "id": row["id"],
        "node_id": node_id("IssueComment", row["id"]),
        "url": api,
        "html_url": f"{urls.repo_web(full)}/issues/{issue_number}#issuecomment-{row['id']}",
        "issue_url": f"{urls.repo_api(full)}/issues/{issue_number}",
        "body": row["body"],
        "user": user(urls, ctx.store.user(row["user_id"])),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "author_association": author_association(ctx.store, repo_row, row["user_id"]),
        "performed_via_github_app": None,
        "reactions": _reactions(api),
    }


# git data ----------------------------------------------------------------
def _signature(sig: Signature) -> dict[str, Any]:
    return {"name": sig.name, "email": sig.email, "date": iso(sig.date)}


_VERIFICATION = {"verified": False, "reason": "unsigned", "signature": None, "payload": None, "verified_at": None}


def git_commit(urls: Urls, repo_row: sqlite3.Row, info: CommitInfo) -> dict[str, Any]:
    api, web = urls.repo_api(repo_row["full_name"]), urls.repo_web(repo_row["full_name"])
    return {
        "sha": info.sha,
        "node_id": node_id("Commit", f"{repo_row['id']}:{info.sha}"),
        "url": f"{api}/git/commits/{info.sha}",
        "html_url": f"{web}/commit/{info.sha}",
        "author": _signature(info.author),
        "committer": _signature(info.committer),
        "message": info.message,
        "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
        "parents": [{"sha": p, "url": f"{api}/git/commits/{p}", "html_url": f"{web}/commit/{p}"} for p in info.parents],
        "verification": dict(_VERIFICATION),
    }


def commit(urls: Urls, repo_row: sqlite3.Row, info: CommitInfo) -> dict[str, Any]:
    """The REST ``commit`` object of ``GET /repos/{o}/{r}/commits/{ref}``."""
    api, web = urls.repo_api(repo_row["full_name"]), urls.repo_web(repo_row["full_name"])
    inner = {
        "url": f"{api}/git/commits/{info.sha}",
        "author": _signature(info.author),
        "committer": _signature(info.committer),
        "message": info.message,
        "comment_count": 0,
        "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
        "verification": dict(_VERIFICATION),
    }
    return {
        "url": f"{api}/commits/{info.sha}",
        "sha": info.sha,
        "node_id": node_id("Commit", f"{repo_row['id']}:{info.sha}"),
        "html_url": f"{web}/commit/{info.sha}",
        "comments_url": f"{api}/commits/{info.sha}/comments",
        "commit": inner,
        "author": None,
        "committer": None,
        "parents": [{"sha": p, "url": f"{api}/commits/{p}", "html_url": f"{web}/commit/{p}"} for p in info.parents],
        "stats": {"additions": 0, "deletions": 0, "total": 0},
        "files": [],
    }


def ref(urls: Urls, repo_row: sqlite3.Row, name: str, sha: str, kind: str) -> dict[str, Any]:
    api = urls.repo_api(repo_row["full_name"])
    plural = {"commit": "commits", "tree": "trees", "blob": "blobs", "tag": "tags"}.get(kind, "commits")
    return {
        "ref": name,
        "node_id": node_id("Ref", f"{repo_row['id']}:{name}"),
        "url": f"{api}/git/{name}",
        "object": {"type": kind, "sha": sha, "url": f"{api}/git/{plural}/{sha}"},
    }


def tree(
    urls: Urls, repo_row: sqlite3.Row, sha: str, entries: list[tuple[str, TreeEntry, int | None]]
) -> dict[str, Any]:
    api = urls.repo_api(repo_row["full_name"])
    out = []
    for path, entry, size in entries:
        item: dict[str, Any] = {"path": path, "mode": entry.mode, "type": entry.type, "sha": entry.sha}
        if entry.type == "blob":
            item["size"] = size
            item["url"] = f"{api}/git/blobs/{entry.sha}"
        elif entry.type == "tree":
            item["url"] = f"{api}/git/trees/{entry.sha}"
        out.append(item)
    return {"sha": sha, "url": f"{api}/git/trees/{sha}", "tree": out, "truncated": False}


def blob(urls: Urls, repo_row: sqlite3.Row, sha: str, data: bytes) -> dict[str, Any]:
    return {
        "sha": sha,
        "node_id": node_id("Blob", f"{repo_row['id']}:{sha}"),
        "size": len(data),
        "url": f"{urls.repo_api(repo_row['full_name'])}/git/blobs/{sha}",
        "content": wrap_base64(data),
        "encoding": "base64",
    }


# contents ----------------------------------------------------------------
def wrap_base64(data: bytes) -> str:
    """Base64 in 60-character lines, as GitHub sends file content."""
    text = base64.b64encode(data).decode()
    return "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


def content_entry(
    urls: Urls, repo_row: sqlite3.Row, path: str, entry: TreeEntry, size: int, ref_name: str
) -> dict[str, Any]:
    full = repo_row["full_name"]
    api, web = urls.repo_api(full), urls.repo_web(full)
    quoted = urllib.parse.quote(path)
    kind = {"blob": "file", "tree": "dir", "commit": "submodule"}.get(entry.type, "file")
    self_url = f"{api}/contents/{quoted}?ref={q(ref_name)}"
    git_url = f"{api}/git/{'trees' if entry.type == 'tree' else 'blobs'}/{entry.sha}"
    html_url = f"{web}/{'tree' if entry.type == 'tree' else 'blob'}/{q(ref_name)}/{quoted}"
    return {
        "type": kind,
        "size": size,
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "sha": entry.sha,
        "url": self_url,
        "git_url": git_url,
        "html_url": html_url,
        "download_url": f"{web}/raw/{q(ref_name)}/{quoted}" if kind == "file" else None,
        "_links": {"self": self_url, "git": git_url, "html": html_url},
    }


def content_file(
    urls: Urls, repo_row: sqlite3.Row, path: str, entry: TreeEntry, data: bytes, ref_name: str
) -> dict[str, Any]:
    body = content_entry(urls, repo_row, path, entry, len(data), ref_name)
    body["content"] = wrap_base64(data)
    body["encoding"] = "base64"
    return body


def content_directory(
    urls: Urls, repo_row: sqlite3.Row, path: str, entry: TreeEntry, entries: list[dict[str, Any]], ref_name: str
) -> dict[str, Any]:
    """A directory as ``application/vnd.github.object`` gives it: its own entry plus ``entries``."""
    body = content_entry(urls, repo_row, path, entry, 0, ref_name)
    body["entries"] = entries
    return body


# statuses and checks -----------------------------------------------------
def status(urls: Urls, store: Store, repo_row: sqlite3.Row, row: sqlite3.Row) -> dict[str, Any]:
    creator = user(urls, store.user(row["creator_id"]))
    return {
        "url": f"{urls.repo_api(repo_row['full_name'])}/statuses/{row['sha']}",
        "avatar_url": creator["avatar_url"] if creator else None,
        "id": row["id"],
        "node_id": node_id("StatusContext", row["id"]),
        "state": row["state"],
        "description": row["description"],
        "target_url": row["target_url"],
        "context": row["context"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "creator": creator,
    }


def check_run(
    ctx: RequestContext, repo_row: sqlite3.Row, row: sqlite3.Row, spec: TokenSpec | None = None
) -> dict[str, Any]:
    urls, full = ctx.urls, repo_row["full_name"]
    api = f"{urls.repo_api(full)}/check-runs/{row['id']}"
    app_spec = spec or TokenSpec(
        token="-", login="-", label="-", kind="app", app_slug=row["app_slug"], app_id=row["app_id"]
    )
    owner = user(urls, ctx.store.user(repo_row["owner_id"]))
    return {
        "id": row["id"],
        "head_sha": row["head_sha"],
        "node_id": node_id("CheckRun", row["id"]),
        "external_id": row["external_id"] or "",
        "url": api,
        "html_url": f"{urls.repo_web(full)}/runs/{row['id']}",
        "details_url": row["details_url"] or f"{urls.repo_web(full)}/runs/{row['id']}",
        "status": row["status"],
        "conclusion": row["conclusion"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "output": {
            "title": row["output_title"],
            "summary": row["output_summary"],
            "text": row["output_text"],
            "annotations_count": 0,
            "annotations_url": f"{api}/annotations",
        },
        "name": row["name"],
        "check_suite": {"id": row["id"]},
        "app": app(urls, app_spec, owner),
        "pull_requests": [],
    }


def rate_limit(core: dict[str, int]) -> dict[str, Any]:
    reset = core["reset"]
    other = {
        "search": {"limit": 30, "used": 0, "remaining": 30, "reset": reset},
        "graphql": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset},
        "integration_manifest": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset},
        "code_search": {"limit": 10, "used": 0, "remaining": 10, "reset": reset},
    }
    return {"resources": {"core": core, **other}, "rate": core}
