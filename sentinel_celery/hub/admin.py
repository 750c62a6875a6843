"""The hub's own admin API under ``/_hub`` (not part of GitHub's).

Owns the endpoints tests, benchmarks and the demo use to steer and observe the
hub: the request log, fault injection, rate-limit counters, repositories and
the list of token labels. All but ``GET /_hub/health`` need an admin token.
Admin requests are never faulted, rate limited or logged.

=========================  ====================================================
``GET /_hub/health``       ``{"ok": true}``, no token needed
``GET /_hub/requests``     the log; filters ``since`` (sequence number),
                           ``since_time`` (ISO time), ``method``,
                           ``path_prefix``, ``status``, ``token`` (label)
``DELETE /_hub/requests``  clear the log
``GET /_hub/faults``       current fault settings
``POST /_hub/faults``      change some settings (JSON, see ``faults.py``)
``DELETE /_hub/faults``    clear all faults
``GET /_hub/rate-limits``  each token label's primary quota
``DELETE /_hub/rate-limits``  reset all counters
``POST /_hub/repos``       ``{"full_name": "o/r"}``: create a repository
``GET /_hub/tokens``       token labels, kinds and access (never the tokens)
``GET /_hub/webhooks``     the hooks (never their secrets)
``POST /_hub/webhooks``    ``{"url", "secret", "repos", "events"}``: add a hook
``GET /_hub/webhooks/deliveries``  deliveries, newest first; filters ``event``,
                           ``repo``, ``status`` (``OK``, ``failed``, ``pending``)
``GET /_hub/webhooks/deliveries/{id}``  one delivery with its headers and payload
``POST /_hub/webhooks/deliveries/{id}/attempts``  redeliver (same GUID)
=========================  ====================================================
"""

from __future__ import annotations

from .context import RequestContext
from .errors import HubError, missing_field
from .routing import Response, Router
from .timestamps import parse_iso

router = Router()


@router.route("GET", "/_hub/health")
def health(ctx: RequestContext) -> Response:
    return Response(200, {"ok": True, "repos": [row["full_name"] for row in ctx.store.repos()]})


@router.route("GET", "/_hub/requests")
def list_requests(ctx: RequestContext) -> Response:
    since_time = ctx.arg("since_time")
    status = ctx.arg("status")
    try:
        entries = ctx.state.log.entries(
            since=ctx.int_arg("since", 0) or None,
            since_time=parse_iso(since_time).timestamp() if since_time else None,
            method=ctx.arg("method"),
            path_prefix=ctx.arg("path_prefix"),
            status=int(status) if status else None,
            token=ctx.arg("token"),
        )
    except ValueError as exc:
        raise HubError(400, f"Invalid filter: {exc}") from None
    return Response(200, {"requests": [e.as_json() for e in entries], "last_seq": ctx.state.log.last_seq})


@router.route("DELETE", "/_hub/requests")
def clear_requests(ctx: RequestContext) -> Response:
    ctx.state.log.clear()
    return Response(204)


@router.route("GET", "/_hub/faults")
def get_faults(ctx: RequestContext) -> Response:
    return Response(200, ctx.state.faults.snapshot())


@router.route("POST", "/_hub/faults")
@router.route("PATCH", "/_hub/faults")
def set_faults(ctx: RequestContext) -> Response:
    try:
        ctx.state.faults.configure(**ctx.json_object())
    except (TypeError, ValueError) as exc:
        raise HubError(422, f"Invalid faults: {exc}") from None
    return Response(200, ctx.state.faults.snapshot())


@router.route("DELETE", "/_hub/faults")
def clear_faults(ctx: RequestContext) -> Response:
    ctx.state.faults.clear()
    return Response(200, ctx.state.faults.snapshot())


@router.route("GET", "/_hub/rate-limits")
def rate_limits(ctx: RequestContext) -> Response:
    return Response(200, {p.label: ctx.state.quota_for(p).as_json() for p in ctx.state.tokens.principals()})


@router.route("DELETE", "/_hub/rate-limits")
def reset_rate_limits(ctx: RequestContext) -> Response:
    ctx.state.reset_rate_limits()
    return Response(204)


@router.route("POST", "/_hub/repos")
def create_repo(ctx: RequestContext) -> Response:
    full_name = ctx.json_object().get("full_name")
    if not isinstance(full_name, str):
        raise missing_field("Repository", "full_name")
    try:
        row = ctx.state.create_repo(full_name)
    except ValueError as exc:
        raise HubError(422, str(exc)) from None
    return Response(
        201, {"id": row["id"], "full_name": row["full_name"], "html_url": f"{ctx.urls.web}/{row['full_name']}"}
    )


@router.route("GET", "/_hub/tokens")
def list_tokens(ctx: RequestContext) -> Response:
    return Response(
        200,
        [
            {
                "label": p.label,
                "login": p.spec.user_login,
                "kind": p.spec.kind,
                "access": p.spec.access,
                "repos": p.spec.repos,
            }
            for p in ctx.state.tokens.principals()
        ],
    )


@router.route("GET", "/_hub/webhooks")
def list_webhooks(ctx: RequestContext) -> Response:
    return Response(200, [hook.as_json() for hook in ctx.state.webhooks.hooks()])


@router.route("POST", "/_hub/webhooks")
def add_webhook(ctx: RequestContext) -> Response:
    try:
        (hook,) = ctx.state.webhooks.add_from_dicts([ctx.json_object()], "webhook")
    except ValueError as exc:
        raise HubError(422, str(exc)) from None
    return Response(201, hook.as_json())


@router.route("GET", "/_hub/webhooks/deliveries")
def list_deliveries(ctx: RequestContext) -> Response:
    status = ctx.arg("status")
    items = ctx.state.webhooks.deliveries(event=ctx.arg("event"), repo=ctx.arg("repo"))
    if status:
        items = [d for d in items if d.status.split(":")[0].lower() == status.lower()]
    return Response(200, [d.as_json() for d in reversed(items)])


@router.route("GET", "/_hub/webhooks/deliveries/{delivery_id:int}")
def get_delivery(ctx: RequestContext, delivery_id: int) -> Response:
    delivery = ctx.state.webhooks.get(delivery_id)
    if delivery is None:
        raise HubError(404, "Not Found")
    return Response(200, delivery.as_json(full=True))


@router.route("POST", "/_hub/webhooks/deliveries/{delivery_id:int}/attempts")
def redeliver(ctx: RequestContext, delivery_id: int) -> Response:
    try:
        delivery = ctx.state.webhooks.redeliver(delivery_id)
    except KeyError:
        raise HubError(404, "Not Found") from None
    return Response(202, delivery.as_json())
