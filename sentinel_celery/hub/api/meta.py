"""Endpoints about the caller: ``GET /user``, ``GET /users/{login}`` and ``GET /rate_limit``."""

from __future__ import annotations

from .. import shapes
from ..apiversion import V2026_03_10
from ..context import RequestContext
from ..errors import HubError, not_found
from ..routing import Response, Router

router = Router()


@router.route("GET", "/user")
def get_authenticated_user(ctx: RequestContext) -> Response:
    spec = ctx.caller.spec
    if spec.is_app:
        raise HubError(403, "Resource not accessible by integration")
    row = ctx.store.user(ctx.caller.user_id)
    owned = ctx.store.one("SELECT COUNT(*) AS n FROM repos WHERE owner_id = ?", (row["id"],))["n"]
    body = shapes.full_user(ctx.urls, row, public_repos=0, private_repos=owned)
    body["user_view_type"] = "private"  # the caller sees their own private profile
    return Response(200, body)


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
    body = shapes.rate_limit(ctx.state.quota_for(ctx.caller).as_json())
    if ctx.api_version >= V2026_03_10:
        del body["rate"]  # deprecated since 2021, removed in 2026-03-10
    return Response(200, body)
