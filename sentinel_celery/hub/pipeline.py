"""What happens to each request, in order, independent of HTTP framing.

Owns :class:`Pipeline`. An API request goes through, in this order:

1. outage (fault) → 503
2. ``X-GitHub-Api-Version`` → 400 for a version GitHub does not support
3. authentication → 401 "Requires authentication" / "Bad credentials", counted
   against the unauthenticated limit, whose ``x-ratelimit-*`` headers it carries
4. concurrency (secondary limit) → 403/429 with ``retry-after``
5. added latency (fault)
6. injected failure, ``fail_mode="before"`` → 5xx
7. primary rate limit (``GET /rate_limit`` is not counted) → 403
8. content-creating secondary limits → 403/429 with ``retry-after``
9. routing → 404; the credentials the route takes (a JWT only on ``/app``) → 401;
   the handler, inside one store transaction
10. injected failure, ``fail_mode="after"`` → 5xx although the change was made
11. ``ETag``; a matching ``If-None-Match`` → 304, refunded to the primary limit

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
from typing import Any, Callable

from . import admin, html
from .api import build_router
from .apiversion import DEFAULT_VERSION, selected_version
from .auth import Principal, require_credentials
from .context import WRITE_METHODS, RequestContext, Urls
from .errors import RATE_LIMIT_DOCS_URL, HubError
from .loopback import is_loopback
from .ratelimit import Quota
from .routing import Response
from .state import HubState

log = logging.getLogger(__name__)

API_PREFIX = "/api/v3"
_HOST = re.compile(r"^(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


@dataclass
class _Call:
    """One API request's progress through the pipeline."""

    method: str
    path: str
    rid: str
    principal: Principal | None = None
    token_label: str | None = None  # for the log: None without a token, "invalid" for an unknown one
    quota: Quota | None = None
    entered: bool = False  # counted in the concurrency limit, to be released
    counted: bool = False  # counted in the primary limit, refundable on 304
    failure: tuple[int, str] | None = None
    version: str | None = None  # the X-GitHub-Api-Version served, once accepted
    unauthenticated: Quota | None = None  # set when the request was turned away for its credentials


@dataclass
class HttpResult:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _is_loopback_host(header: str) -> bool:
    """Whether a ``Host`` header names this machine (``127.0.0.1:8765``, ``localhost``, ``[::1]:8765``)."""
    if not _HOST.match(header):
        return False
    name = header[1 : header.index("]")] if header.startswith("[") else header.rsplit(":", 1)[0]
    return is_loopback(name)


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
    """Turns one HTTP request into one answer, against ``state``.

    ``fallback_host`` gives the address to put in bodies when a request's
    ``Host`` header does not name this machine.
    """

    def __init__(self, state: HubState, fallback_host: Callable[[], str]) -> None:
        self.state = state
        self.fallback_host = fallback_host
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
        if not _is_loopback_host(host):
            host = self.fallback_host()  # bodies only ever point back at this loopback server
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
        return "owner" not in params or self.state.store.repo(params["owner"], params["repo"]) is not None

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
        call = _Call(method=method, path=path, rid=request_id())
        try:
            try:
                self._admit(call, headers)
                response = self._dispatch(call, query, headers, body, urls)
            except HubError as exc:
                response = Response(exc.status, exc.body(), dict(exc.headers))
            except Exception:
                log.exception("sentinel hub: unhandled error for %s %s", method, path)
                response = Response(500, {"message": "Server Error", "status": "500"})
            result = self._finish(response, call, headers)
        finally:
            if call.entered and call.principal is not None:
                self.state.limiter.leave(call.principal.label)
        self.state.log.record(
            method=method, path=path, query=raw_query, status=result.status, token=call.token_label, started=started
        )
        return result

    def _admit(self, call: "_Call", headers: dict[str, str]) -> None:
        """Steps 1-8: everything that may turn a request away before its handler runs."""
        state = self.state
        if state.faults.in_outage():
            raise HubError(503, "Service Unavailable")
        call.version = selected_version(headers.get("x-github-api-version"))
        if headers.get("authorization"):
            call.token_label = "invalid"
        try:
            principal = call.principal = state.tokens.authenticate(headers.get("authorization"))
        except HubError:
            call.unauthenticated = state.count_unauthenticated()
            raise
        call.token_label = key = principal.label
        if not state.limiter.enter(key):
            raise self._secondary(call.rid, retry_after=1)
        call.entered = True
        latency = state.faults.latency()
        if latency:
            time.sleep(latency)
        call.failure = state.faults.draw_failure(call.method, call.path)
        if call.failure and call.failure[1] == "before":
            raise HubError(call.failure[0], "Server Error")
        if call.path.rstrip("/") != "/rate_limit":
            if state.faults.rate_limit_exhausted()[0]:
                raise self._primary(principal, call.rid)
            allowed, call.quota = state.limiter.consume(key)
            if not allowed:
                raise self._primary(principal, call.rid)
            call.counted = True
        if call.method in WRITE_METHODS:
            wait = state.limiter.admit_write(key)
            if wait is not None:
                raise self._secondary(call.rid, retry_after=wait)

    def _dispatch(
        self, call: "_Call", query: dict[str, list[str]], headers: dict[str, str], body: bytes, urls: Urls
    ) -> Response:
        """Steps 9-10: route, run the handler in one transaction, maybe fail afterwards."""
        resolved = self.api.resolve(call.method, call.path)
        if resolved is None:
            raise HubError(404, "Not Found")
        route, params = resolved
        require_credentials(call.principal, route.credentials)
        ctx = RequestContext(
            state=self.state,
            method=call.method,
            path=call.path,
            query=query,
            headers=headers,
            body=body,
            principal=call.principal,
            urls=urls,
            api_version=call.version or DEFAULT_VERSION,
        )
        with self.state.webhooks.batch(), self.state.store.tx():  # events leave once the change committed
            response = route.handler(ctx, **params)
        if call.failure and call.failure[1] == "after":
            raise HubError(call.failure[0], "Server Error")
        return response

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
            self.state.limiter.limits.secondary_status,
            message,
            documentation_url=f"{RATE_LIMIT_DOCS_URL}#about-secondary-rate-limits",
            headers={"retry-after": str(retry_after)},
        )

    def _finish(self, response: Response, call: "_Call", headers: dict[str, str]) -> HttpResult:
        """Step 11 and the headers every API answer carries."""
        state = self.state
        payload = self._encode(response)
        out = dict(response.headers)
        out["X-GitHub-Request-Id"] = call.rid
        out["X-GitHub-Media-Type"] = "github.v3; format=json"
        if call.version is not None:
            out["X-GitHub-Api-Version-Selected"] = call.version
        principal = call.principal
        if call.unauthenticated is not None:
            out.update(call.unauthenticated.headers())
        elif principal is not None:
            quota = call.quota
            if quota is None or state.faults.rate_limit_exhausted()[0]:
                quota = state.quota_for(principal)
            out.update(quota.headers())
            if not principal.spec.is_app:
                out["X-OAuth-Scopes"] = "repo" if principal.spec.can_write else ""
                out["X-Accepted-OAuth-Scopes"] = "repo"
        status = response.status
        if call.method == "GET" and status == 200:
            etag = _etag(payload)
            out["ETag"] = etag
            out["Cache-Control"] = "private, max-age=60, s-maxage=60"
            out["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
            if _etag_matches(headers.get("if-none-match"), etag):
                if principal is not None and call.counted:
                    out.update(state.limiter.refund(principal.label).headers())
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
                principal = self.state.tokens.authenticate(headers.get("authorization"))
                require_credentials(principal, route.credentials)
                if not principal.spec.is_admin:
                    raise HubError(403, "The hub admin API needs an admin token")
            ctx = RequestContext(
                state=self.state,
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                principal=principal,
                urls=urls,
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
            state=self.state, method="GET", path=path, query=query, headers=headers, body=b"", principal=None, urls=urls
        )
        try:
            with self.state.store.lock:
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
