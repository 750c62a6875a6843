"""GitHub App endpoints, for an app authenticating with its own JWT: ``GET /app`` and
``POST /app/installations/{installation_id}/access_tokens``, which mints installation tokens.

Every route here takes a JWT and nothing else (``credentials="jwt"``); the pipeline
answers 401 to a token on them, and to a JWT anywhere else.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .. import shapes
from ..apps import AppSpec, Installation, granted_permissions
from ..context import RequestContext
from ..errors import not_found, unprocessable
from ..routing import Response, Router
from ..timestamps import iso

router = Router()
NOT_IN_INSTALLATION = (
    "There is at least one repository that does not exist or is not accessible to the parent installation."
)


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
