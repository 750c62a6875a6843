"""What happens to each request, in order, independent of HTTP framing.

Owns :class:`Pipeline`. An API request goes through, in this order:

1. outage (fault) → 503
2. authentication → 401 "Requires authentication" / "Bad credentials"
3. concurrency (secondary limit) → 403/429 with ``retry-after``
4. added latency (fault)
5. injected failure, ``fail_mode="before"`` → 5xx
6. primary rate limit (``GET /rate_limit`` is not counted) → 403
7. content-creating secondary limits → 403/429 with ``retry-after``
8. routing → 404; the handler, inside one store transaction
9. injected failure, ``fail_mode="after"`` → 5xx although the change was made
10. ``ETag``; a matching ``If-None-Match`` → 304, refunded to the primary limit

Paths may carry GitHub Enterprise's ``/api/v3`` prefix; ``url`` fields in
bodies then keep it. ``/_hub/...`` goes to the admin API; other GETs that are
not API paths go to the HTML view.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import admin, html
from .api import build_router
from .auth import Principal
from .context import WRITE_METHODS, RequestContext, Urls
from .errors import RATE_LIMIT_DOCS_URL, HubError
from .ratelimit import Quota
from .routing import JSON_TYPE, Response

if TYPE_CHECKING:
    from .app import Hub

log = logging.getLogger(__name__)

API_PREFIX = "/api/v3"
_HOST = re.compile(r"^(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


@dataclass
class HttpResult:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def request_id() -> str:
    return ":".join(secrets.token_hex(n).upper() for n in (2, 3, 4, 4, 4))


def _etag(body: bytes) -> str:
    return f'W/"{hashlib.sha256(body).hexdigest()}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


class Pipeline:
    def __init__(self, hub: "Hub") -> None:
        self.hub = hub
        self.api = build_router()
        self.admin = admin.router
        self.html = html.router

    # entry point ---------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> HttpResult:
        started = time.time()
        split = urllib.parse.urlsplit(target)
        raw_path = split.path or "/"
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        prefix = ""
        path = raw_path
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            prefix, path = API_PREFIX, path[len(API_PREFIX) :] or "/"
        host = headers.get("host", "")
        if not _HOST.match(host):
            host = self.hub.address
        urls = Urls(api=f"http://{host}{prefix}", web=f"http://{host}")
        route_method = "GET" if method == "HEAD" else method

        if path == "/_hub" or path.startswith("/_hub/"):
            result = self._admin(route_method, path, query, headers, body, urls)
        elif not prefix and route_method == "GET" and self._is_html(path, headers):
            result = self._html(path, query, headers, urls)
        else:
            result = self._api(route_method, path, query, split.query, headers, body, urls, started)
        if method == "HEAD":
            result.body = b""
        return result

    def _is_html(self, path: str, headers: dict[str, str]) -> bool:
        """A page of the HTML view, rather than an (unknown) API path answered with JSON 404?"""
        if self.api.matches_path(path):
            return False
        resolved = self.html.resolve("GET", path)
        if resolved is None:
            return False
        if "text/html" in headers.get("accept", ""):
            return True
        params = resolved[1]
        return "owner" not in params or self.hub.store.repo(params["owner"], params["repo"]) is not None

    # API -----------------------------------------------------------------
    def _api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        raw_query: str,
        headers: dict[str, str],
        body: bytes,
        urls: Urls,
        started: float,
    ) -> HttpResult:
        hub = self.hub
        rid = request_id()
        principal: Principal | None = None
        quota: Quota | None = None
        entered = counted = False
        token_label: str | None = None
        try:
            try:
                if hub.faults.in_outage():
                    raise HubError(503, "Service Unavailable")
                if headers.get("authorization"):
                    token_label = "invalid"
                principal = hub.tokens.authenticate(headers.get("authorization"))
                token_label = principal.label
                key = principal.label
                if not hub.limiter.enter(key):
                    raise self._secondary(rid, retry_after=1)
                entered = True
                latency = hub.faults.latency()
                if latency:
                    time.sleep(latency)
                failure = hub.faults.draw_failure(method, path)
                if failure and failure[1] == "before":
                    raise HubError(failure[0], "Server Error")
                if path.rstrip("/") != "/rate_limit":
                    if hub.faults.rate_limit_exhausted()[0]:
                        raise self._primary(principal, rid)
                    allowed, quota = hub.limiter.consume(key)
                    if not allowed:
                        raise self._primary(principal, rid)
                    counted = True
                if method in WRITE_METHODS:
                    wait = hub.limiter.admit_write(key)
                    if wait is not None:
                        raise self._secondary(rid, retry_after=wait)
                resolved = self.api.resolve(method, path)
                if resolved is None:
                    raise HubError(404, "Not Found")
                route, params = resolved
                ctx = RequestContext(
                    hub=hub, method=method, path=path, query=query, headers=headers, body=body, principal=principal, urls=urls
                )
                with hub.store.tx():
                    response = route.handler(ctx, **params)
                if failure and failure[1] == "after":
                    raise HubError(failure[0], "Server Error")
            except HubError as exc:
                response = Response(exc.status, exc.body(), dict(exc.headers))
            except Exception:
                log.exception("sentinel hub: unhandled error for %s %s", method, path)
                response = Response(500, {"message": "Server Error", "status": "500"})
            result = self._finish(response, method, headers, principal, quota, counted, rid)
        finally:
            if entered and principal is not None:
                hub.limiter.leave(principal.label)
        hub.log.record(method=method, path=path, query=raw_query, status=result.status, token=token_label, started=started)
        return result

    def _primary(self, principal: Principal, rid: str) -> HubError:
        who = (
            f"installation ID {principal.spec.installation_id}"
            if principal.spec.is_app
            else f"user ID {principal.user_id}"
        )
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        message = (
            f"API rate limit exceeded for {who}. If you reach out to GitHub Support for help, "
            f"please include the request ID {rid} and timestamp {stamp}."
        )
        return HubError(403, message, documentation_url=f"{RATE_LIMIT_DOCS_URL}#about-the-primary-rate-limit")

    def _secondary(self, rid: str, retry_after: int) -> HubError:
        message = (
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
            f"If you reach out to GitHub Support for help, please include the request ID {rid}."
        )
        return HubError(
            self.hub.limiter.limits.secondary_status,
            message,
            documentation_url=f"{RATE_LIMIT_DOCS_URL}#about-secondary-rate-limits",
            headers={"retry-after": str(retry_after)},
        )

    def _finish(
        self,
        response: Response,
        method: str,
        headers: dict[str, str],
        principal: Principal | None,
        quota: Quota | None,
        counted: bool,
        rid: str,
    ) -> HttpResult:
        hub = self.hub
        payload = self._encode(response)
        out = dict(response.headers)
        out["X-GitHub-Request-Id"] = rid
        out["X-GitHub-Media-Type"] = "github.v3; format=json"
        out["X-GitHub-Api-Version-Selected"] = "2022-11-28"
        if principal is not None:
            if quota is None or hub.faults.rate_limit_exhausted()[0]:
                quota = hub.quota_for(principal)
            out.update(quota.headers())
            if not principal.spec.is_app:
                out["X-OAuth-Scopes"] = "repo" if principal.spec.can_write else ""
                out["X-Accepted-OAuth-Scopes"] = "repo"
        status = response.status
        if method == "GET" and status == 200:
            etag = _etag(payload)
            out["ETag"] = etag
            out["Cache-Control"] = "private, max-age=60, s-maxage=60"
            out["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
            if _etag_matches(headers.get("if-none-match"), etag):
                if principal is not None and counted:
                    out.update(hub.limiter.refund(principal.label).headers())
                return HttpResult(304, list(out.items()), b"")
        if status in (204, 304):
            return HttpResult(status, list(out.items()), b"")
        out["Content-Type"] = response.content_type
        out["Content-Length"] = str(len(payload))
        return HttpResult(status, list(out.items()), payload)

    @staticmethod
    def _encode(response: Response) -> bytes:
        body: Any = response.body
        if body is None:
            return b""
        if isinstance(body, bytes):
            return body
        if isinstance(body, str):
            return body.encode("utf-8")
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    # admin and HTML ------------------------------------------------------
    def _admin(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes, urls: Urls
    ) -> HttpResult:
        try:
            resolved = self.admin.resolve(method, path)
            if resolved is None:
                raise HubError(404, "Not Found")
            route, params = resolved
            principal = None
            if path.rstrip("/") != "/_hub/health":
                principal = self.hub.tokens.authenticate(headers.get("authorization"))
                if not principal.spec.is_admin:
                    raise HubError(403, "The hub admin API needs an admin token")
            ctx = RequestContext(
                hub=self.hub, method=method, path=path, query=query, headers=headers, body=body, principal=principal, urls=urls
            )
            response = route.handler(ctx, **params)
        except HubError as exc:
            response = Response(exc.status, exc.body(), dict(exc.headers))
        payload = self._encode(response)
        out = dict(response.headers)
        if response.status == 204:
            return HttpResult(204, list(out.items()), b"")
        out["Content-Type"] = response.content_type
        out["Content-Length"] = str(len(payload))
        out["Cache-Control"] = "no-store"
        return HttpResult(response.status, list(out.items()), payload)

    def _html(self, path: str, query: dict[str, list[str]], headers: dict[str, str], urls: Urls) -> HttpResult:
        resolved = self.html.resolve("GET", path)
        assert resolved is not None
        route, params = resolved
        ctx = RequestContext(
            hub=self.hub, method="GET", path=path, query=query, headers=headers, body=b"", principal=None, urls=urls
        )
        try:
            with self.hub.store.lock:
                response = route.handler(ctx, **params)
        except HubError as exc:
            response = html.error_page(exc.status, exc.message)
        payload = self._encode(response)
        out = dict(response.headers)
        out.update(
            {
                "Content-Type": response.content_type,
                "Content-Length": str(len(payload)),
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
            }
        )
        return HttpResult(response.status, list(out.items()), payload)
