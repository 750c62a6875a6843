"""Endpoints about the caller: ``GET /user``, ``GET /users/{login}``, ``GET /rate_limit``,
and for a GitHub App signing a JWT, ``GET /app`` and the installation tokens it buys
(``POST /app/installations/{installation_id}/access_tokens``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .. import shapes
from ..apps import AppSpec, Installation, granted_permissions
from ..context import RequestContext
from ..errors import HubError, not_found, unprocessable
from ..routing import Response, Router
from ..timestamps import iso

router = Router()
NOT_IN_INSTALLATION = (
    "There is at least one repository that does not exist or is not accessible to the parent installation."
)


@router.route("GET", "/user")
def get_authenticated_user(ctx: RequestContext) -> Response:
    spec = ctx.caller.spec
    if spec.is_app:
        raise HubError(403, "Resource not accessible by integration")
    row = ctx.store.user(ctx.caller.user_id)
    owned = ctx.store.one("SELECT COUNT(*) AS n FROM repos WHERE owner_id = ?", (row["id"],))["n"]
    return Response(200, shapes.full_user(ctx.urls, row, public_repos=0, private_repos=owned))


@router.route("GET", "/users/{login}")
def get_user(ctx: RequestContext, login: str) -> Response:
    row = ctx.store.user_by_login(login)
    if row is None:
        raise not_found()
    owned = ctx.store.one("SELECT COUNT(*) AS n FROM repos WHERE owner_id = ?", (row["id"],))["n"]
    body = shapes.full_user(ctx.urls, row, public_repos=0, private_repos=owned)
    for private in (
        "private_gists",
        "total_private_repos",
        "owned_private_repos",
        "disk_usage",
        "collaborators",
        "two_factor_authentication",
        "plan",
        "notification_email",
    ):
        body.pop(private, None)
    return Response(200, body)


@router.route("GET", "/rate_limit")
def get_rate_limit(ctx: RequestContext) -> Response:
    return Response(200, shapes.rate_limit(ctx.state.quota_for(ctx.caller).as_json()))


def _calling_app(ctx: RequestContext) -> AppSpec:
    app = ctx.caller.app
    assert app is not None  # the route takes JWTs only
    return app


@router.route("GET", "/app", credentials="jwt")
def get_authenticated_app(ctx: RequestContext) -> Response:
    app = _calling_app(ctx)
    owner = shapes.user(ctx.urls, ctx.store.user_by_login(app.owner or ""))
    body = shapes.app(ctx.urls, ctx.caller.spec, owner)
    body["installations_count"] = len(app.installations)
    return Response(200, body)


def _narrowed(ctx: RequestContext, installation: Installation, data: dict[str, Any]) -> list[sqlite3.Row] | None:
    """The repositories asked for with ``repositories`` (names, without owner) or ``repository_ids``; None: all."""
    names, ids = data.get("repositories"), data.get("repository_ids")
    if names is None and ids is None:
        return None
    if not isinstance(names or [], list) or not isinstance(ids or [], list):
        raise unprocessable(NOT_IN_INSTALLATION)
    covered = {name.lower() for name in installation.repos}
    rows = [row for row in ctx.store.repos() if row["full_name"].lower() in covered]
    chosen: dict[int, sqlite3.Row] = {}
    for name in names or []:
        matches = [row for row in rows if row["name"].lower() == str(name).lower()]
        if not matches:
            raise unprocessable(NOT_IN_INSTALLATION)
        chosen.update((row["id"], row) for row in matches)
    for repo_id in ids or []:
        match = next((row for row in rows if row["id"] == repo_id), None)
        if match is None:
            raise unprocessable(NOT_IN_INSTALLATION)
        chosen[match["id"]] = match
    return list(chosen.values())


@router.route("POST", "/app/installations/{installation_id:int}/access_tokens", credentials="jwt")
def create_installation_token(ctx: RequestContext, installation_id: int) -> Response:
    app = _calling_app(ctx)
    installation = app.installation(installation_id)
    if installation is None:
        raise not_found()
    data = ctx.json_object()
    permissions = granted_permissions(data.get("permissions"))
    rows = _narrowed(ctx, installation, data)
    spec = ctx.state.mint_installation_token(
        app.app_id,
        installation.id,
        repos=[row["full_name"] for row in rows] if rows is not None else None,
        access="write" if any(level != "read" for level in permissions.values()) else "read",
    )
    assert spec.expires_at is not None
    body: dict[str, Any] = {
        "token": spec.token,
        "expires_at": iso(spec.expires_at),
        "permissions": permissions,
        "repository_selection": "selected",
    }
    if rows is not None:
        body["repositories"] = [shapes.repo(ctx, row) for row in rows]
    return Response(201, body)
