"""The HTML view: what a person sees at ``html_url``, as on github.com.

Owns the pages ``/`` (repositories), ``/{owner}/{repo}`` and
``/{owner}/{repo}/issues`` (issue list, ``?state=open|closed|all``),
``/{owner}/{repo}/issues/{n}`` (title, state, coloured label chips, the body
and comments rendered from Markdown) and ``/{owner}/{repo}/raw/{ref}/{path}``
(a file's bytes as text/plain, the contents API's ``download_url``).

Bodies and comments go through :func:`~.markdown.render_markdown` (HTML
comments hidden, other raw HTML such as ``<img src=x onerror=...>`` shown as
text, task lists as disabled checkboxes). Every other interpolated value is
escaped with :func:`html.escape`. No token is needed: the hub listens on
loopback only.
"""

from __future__ import annotations

import html as _html
import sqlite3

from .context import RequestContext
from .errors import HubError, not_found
from .git import GitRepo
from .markdown import render_markdown
from .routing import HTML_TYPE, Response, Router

router = Router()

_STYLE = """
body{font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;max-width:960px;margin:24px auto;padding:0 16px}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
header{border-bottom:1px solid #d1d9e0;margin-bottom:16px;padding-bottom:8px}
.state{display:inline-block;border-radius:2em;padding:2px 12px;color:#fff;font-weight:600;font-size:13px}
.state.open{background:#1f883d}.state.closed{background:#8250df}
.label{display:inline-block;border-radius:2em;padding:0 8px;font-size:12px;font-weight:600;margin-right:4px}
.box{border:1px solid #d1d9e0;border-radius:6px;margin:12px 0}
.box .meta{background:#f6f8fa;border-bottom:1px solid #d1d9e0;padding:6px 12px;color:#59636e}
.box .markdown{padding:4px 16px}
ul.issues{list-style:none;padding:0;border:1px solid #d1d9e0;border-radius:6px}
ul.issues li{padding:8px 12px;border-bottom:1px solid #d1d9e0}ul.issues li:last-child{border-bottom:0}
.muted{color:#59636e}pre{background:#f6f8fa;padding:8px;overflow:auto}code{background:#f6f8fa}
table{border-collapse:collapse}td,th{border:1px solid #d1d9e0;padding:4px 8px}
.contains-task-list{padding-left:8px}.task-list-item{list-style:none}.task-list-item-checkbox{margin:0 6px 0 0}
"""


def e(value: object) -> str:
    return _html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return Response(status, document, content_type=HTML_TYPE)


def error_page(status: int, message: str) -> Response:
    return _page(f"{status} {message}", f"<h1>{status}</h1><p>{e(message)}</p>", status)


def _label_chip(row: sqlite3.Row) -> str:
    color = str(row["color"]) if len(str(row["color"])) == 6 else "ededed"
    red, green, blue = (int(color[i : i + 2], 16) for i in (0, 2, 4))
    text = "#000" if (0.299 * red + 0.587 * green + 0.114 * blue) > 150 else "#fff"
    title = e(row["description"] or "")
    return f'<span class="label" style="background:#{e(color)};color:{text}" title="{title}">{e(row["name"])}</span>'


def _repo(ctx: RequestContext, owner: str, repo: str) -> sqlite3.Row:
    row = ctx.store.repo(owner, repo)
    if row is None:
        raise not_found()
    return row


def _header(ctx: RequestContext, repo_row: sqlite3.Row) -> str:
    full = repo_row["full_name"]
    return f'<header><a href="/">hub</a> / <a href="/{e(full)}/issues"><b>{e(full)}</b></a></header>'


def _labels(ctx: RequestContext, issue_id: int) -> list[sqlite3.Row]:
    return ctx.store.all(
        "SELECT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ? ORDER BY l.name",
        (issue_id,),
    )


@router.route("GET", "/")
def index(ctx: RequestContext) -> Response:
    items = "".join(
        f'<li><a href="/{e(r["full_name"])}/issues">{e(r["full_name"])}</a></li>' for r in ctx.store.repos()
    )
    return _page("sentinel hub", f"<header><b>sentinel hub</b></header><ul class=issues>{items}</ul>")


@router.route("GET", "/{owner}/{repo}")
def repo_page(ctx: RequestContext, owner: str, repo: str) -> Response:
    return issue_list(ctx, owner, repo)


@router.route("GET", "/{owner}/{repo}/issues")
def issue_list(ctx: RequestContext, owner: str, repo: str) -> Response:
    repo_row = _repo(ctx, owner, repo)
    state = ctx.arg("state", "open")
    if state not in ("open", "closed", "all"):
        state = "open"
    sql = "SELECT * FROM issues WHERE repo_id = ?" + ("" if state == "all" else " AND state = ?")
    params = [repo_row["id"]] + ([] if state == "all" else [state])
    rows = ctx.store.all(sql + " ORDER BY number DESC", params)
    items = []
    for row in rows:
        chips = "".join(_label_chip(label) for label in _labels(ctx, row["id"]))
        items.append(
            f'<li><span class="state {e(row["state"])}">{e(row["state"])}</span> '
            f'<a href="/{e(repo_row["full_name"])}/issues/{row["number"]}">{e(row["title"])}</a> {chips} '
            f'<span class="muted">#{row["number"]}</span></li>'
        )
    tabs = " · ".join(
        f'<a href="?state={s}">{"<b>" + s + "</b>" if s == state else s}</a>' for s in ("open", "closed", "all")
    )
    body = f"{_header(ctx, repo_row)}<p>{tabs} — {len(rows)} issue(s)</p><ul class=issues>{''.join(items)}</ul>"
    return _page(f"Issues · {repo_row['full_name']}", body)


def _box(author: str, when: str, text: str | None, anchor: str = "") -> str:
    ident = f' id="{e(anchor)}"' if anchor else ""
    return (
        f'<div class="box"{ident}><div class="meta"><b>{e(author)}</b> commented {e(when)}</div>'
        f'<div class="markdown">{render_markdown(text)}</div></div>'
    )


@router.route("GET", "/{owner}/{repo}/issues/{number:int}")
def issue_page(ctx: RequestContext, owner: str, repo: str, number: int) -> Response:
    repo_row = _repo(ctx, owner, repo)
    row = ctx.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", (repo_row["id"], number))
    if row is None:
        raise not_found()
    author = ctx.store.user(row["user_id"])["login"]
    chips = "".join(_label_chip(label) for label in _labels(ctx, row["id"]))
    assignees = ", ".join(
        e(r["login"])
        for r in ctx.store.all(
            "SELECT u.login FROM users u JOIN issue_assignees a ON a.user_id = u.id WHERE a.issue_id = ? ORDER BY u.login",
            (row["id"],),
        )
    )
    parts = [
        _header(ctx, repo_row),
        f'<h1>{e(row["title"])} <span class="muted">#{row["number"]}</span></h1>',
        f'<p><span class="state {e(row["state"])}">{e(row["state"])}</span> {chips}</p>',
        f'<p class="muted">Assignees: {assignees or "none"}</p>' if assignees else "",
        _box(author, row["created_at"], row["body"] or "*No description provided.*"),
    ]
    for comment in ctx.store.all("SELECT * FROM comments WHERE issue_id = ? ORDER BY id", (row["id"],)):
        login = ctx.store.user(comment["user_id"])["login"]
        parts.append(_box(login, comment["created_at"], comment["body"], f"issuecomment-{comment['id']}"))
    return _page(f"{row['title']} · Issue #{row['number']} · {repo_row['full_name']}", "".join(parts))


@router.route("GET", "/{owner}/{repo}/raw/{ref}/{path:path}")
def raw_file(ctx: RequestContext, owner: str, repo: str, ref: str, path: str) -> Response:
    repo_row = _repo(ctx, owner, repo)
    git = GitRepo(ctx.store, repo_row["id"])
    sha = git.resolve_commit(ref)
    info = git.commit(sha) if sha else None
    entry = git.lookup(info.tree, path) if info else None
    if entry is None or entry.type != "blob":
        raise HubError(404, "Not Found")
    return Response(200, git.typed(entry.sha, "blob") or b"", content_type="text/plain; charset=utf-8")
