"""The GitHub client the mirror uses: PyGithub's requester, its auth, and errors that say what happened.

Auth is PyGithub's: ``Auth.Token`` for a token (``GITHUB_TOKEN``), or a GitHub App
(``Auth.AppAuth(app_id, private_key).get_installation_auth(installation_id)``). ``github.apiUrl``
(``GITHUB_API_URL``) points it at GitHub Enterprise (``https://host/api/v3``) or at ``sentinel hub``.
PyGithub's own throttling and retries are off: every request goes through the :class:`Budget`,
and a failed request is retried by the mirror at its next flush, not here.

Errors never contain the token: messages are built from the status, GitHub's ``message`` field
and the request path only.

Owns no Redis keys (the budget it is given owns its own).
"""
from __future__ import annotations

import json
import logging
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

from sentinel_celery.github.budget import WRITE_METHODS, Budget

logger = logging.getLogger(__name__)


#: what an API path may hold: letters, digits, ``_ - . ~ : /`` and %-escapes (a quoted label name);
#: no ``?`` or ``#``, no empty segment, and no segment that is, or decodes to, ``.`` or ``..``
_PLAIN_PATH = re.compile(r"(?:[A-Za-z0-9_.~:/-]|%[0-9A-Fa-f]{2})+")


def plain_path(path: str) -> bool:
    """True if ``path`` names one API endpoint as it reads: nothing in it can lead to another."""
    if not _PLAIN_PATH.fullmatch(path):
        return False
    return not any(part in ("", ".", "..") for segment in path.removeprefix("/").split("/")
                   for part in urllib.parse.unquote(segment).replace("\\", "/").split("/"))


class GitHubError(Exception):
    """A request failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, path: str = ""):
        self.status, self.path = status, path
        super().__init__(message)


class Unavailable(GitHubError):
    """No answer, or 5xx: GitHub is down or struggling; try again later."""


class RateLimited(GitHubError):
    """GitHub (or our own budget) says: no request before ``until`` (epoch seconds)."""

    def __init__(self, message: str, until: float, status: int | None = None, path: str = ""):
        self.until = until
        super().__init__(message, status, path)


class AuthFailed(GitHubError):
    """401: the token (or the App's credentials) is not valid."""


class Forbidden(GitHubError):
    """403 that is not a rate limit: the token lacks a permission."""


class NotFound(GitHubError):
    """404: the object does not exist, or the token cannot see the repository."""


class Rejected(GitHubError):
    """400/409/410/422: GitHub refused this request as it is; retrying it will not help."""


class NotConfigured(GitHubError):
    """``github.owner``/``github.repo`` or credentials are missing."""


@dataclass
class Response:
    status: int
    data: Any
    headers: dict

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")


def configured(cfg) -> bool:
    g = cfg.get("github")
    creds = g.get("token") or (g.get("appId") and g.get("privateKeyPath") and g.get("installationId"))
    return bool(g.get("enabled") and g.get("owner") and g.get("repo") and creds)


def uses_app(cfg) -> bool:
    g = cfg.get("github")
    return bool(g.get("appId") and g.get("privateKeyPath") and g.get("installationId")) and not g.get("token")


def build_github(cfg, timeout: int = 15):
    """A PyGithub ``Github`` for the configured API URL and credentials."""
    from github import Auth, Github  # lazy: PyGithub loads only in the process that writes to GitHub
    g = cfg.get("github")
    if g.get("token"):
        auth = Auth.Token(g["token"])
    elif uses_app(cfg):
        try:
            with open(g["privateKeyPath"]) as f:
                key = f.read()
        except OSError as exc:
            raise NotConfigured(f"cannot read the GitHub App private key at github.privateKeyPath "
                                f"({g['privateKeyPath']}): {exc.strerror}") from None
        auth = Auth.AppAuth(int(g["appId"]), key).get_installation_auth(int(g["installationId"]))
    else:
        raise NotConfigured("no GitHub credentials: set GITHUB_TOKEN (github.token), or github.appId, "
                            "github.privateKeyPath and github.installationId for a GitHub App")
    return Github(base_url=(g.get("apiUrl") or "https://api.github.com").rstrip("/"), auth=auth, timeout=timeout,
                  retry=None, seconds_between_requests=None, seconds_between_writes=None, per_page=100)


def _message(data: Any) -> str:
    if isinstance(data, dict):
        msg = str(data.get("message") or "")
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            details = "; ".join(str(e.get("message") or f"{e.get('field')} {e.get('code')}") if isinstance(e, dict)
                                else str(e) for e in errors[:3])
            msg = f"{msg} ({details})" if msg else details
        return msg[:300]
    return ""


class GitHubClient:
    """One repository, through PyGithub, paced by a :class:`Budget`.

    ``max_wait`` is the longest the client sleeps for pacing before a request; a longer wait
    raises :class:`RateLimited` so the mirror can do something else (or stop) meanwhile.
    """

    def __init__(self, cfg, budget: Budget | None = None, *, max_wait: float = 5.0,
                 stop: threading.Event | None = None, github=None):
        g = cfg.get("github")
        if not (g.get("owner") and g.get("repo")):
            raise NotConfigured("github.owner and github.repo (GITHUB_OWNER, GITHUB_REPO) must be set")
        self.owner, self.repo = g["owner"], g["repo"]
        self.api_url = (g.get("apiUrl") or "https://api.github.com").rstrip("/")
        self.github = github or build_github(cfg)
        self.requester = self.github.requester
        self.budget = budget
        self.max_wait = max_wait
        self.stop = stop or threading.Event()
        self.requests = 0

    @property
    def repo_path(self) -> str:
        return f"/repos/{self.owner}/{self.repo}"

    def wait_turn(self, write: bool, path: str = "") -> None:
        """Wait until the budget allows a request (a write if ``write``); raise if that is too far off."""
        if self.budget is None:
            return
        wait, reason = self.budget.delay(write)
        if wait > self.max_wait:
            raise RateLimited(f"not before {wait:.0f}s: {reason}", self.budget.clock() + wait, path=path)
        if wait > 0 and self.stop.wait(wait):
            raise Unavailable("stopping", path=path)

    def request(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
                etag: str | None = None) -> Response:
        """Send one request; 2xx and 304 return, everything else raises a :class:`GitHubError`.

        A ``path`` without a leading slash is relative to the repository (``issues/3``).
        """
        method = method.upper()
        if not plain_path(path):
            # a value from a task (a sha, a number) must never lead to another endpoint
            raise Rejected(f"{method} {path[:100]!r}: refused, not a plain API path", None, path[:100])
        self.wait_turn(method in WRITE_METHODS, path)
        headers = {"If-None-Match": etag} if etag else None
        if not path.startswith("/"):
            path = f"{self.repo_path}/{path}"
        self.requests += 1
        try:
            status, resp_headers, output = self.requester.requestJson(method, path, params, headers, body)
        except Exception as exc:  # connection refused, timeout, TLS: GitHub did not answer
            if self.budget is not None:
                self.budget.note(method, None, None)
            raise Unavailable(f"{method} {path}: no answer from {self.api_url} ({type(exc).__name__})",
                              None, path) from None
        resp_headers = {k.lower(): v for k, v in (resp_headers or {}).items()}
        if self.budget is not None:
            self.budget.note(method, status, resp_headers)
        try:
            data = json.loads(output) if output else None
        except ValueError:
            data = None
        if status < 300 or status == 304:
            return Response(status, data, resp_headers)
        raise self._error(method, path, status, data, resp_headers)

    def _error(self, method: str, path: str, status: int, data: Any, headers: dict) -> GitHubError:
        msg = _message(data)
        where = f"{method} {path}: {status}" + (f" {msg}" if msg else "")
        if status in (403, 429) and (headers.get("retry-after") or headers.get("x-ratelimit-remaining") == "0"
                                     or "rate limit" in msg.lower()):
            until = self.budget.blocked_until if self.budget is not None else 0.0
            return RateLimited(where, until, status, path)
        if status == 401:
            return AuthFailed(where, status, path)
        if status == 403:
            return Forbidden(where, status, path)
        if status == 404:
            return NotFound(where, status, path)
        if status >= 500:
            return Unavailable(where, status, path)
        return Rejected(where, status, path)

    # -- helpers -----------------------------------------------------------------------------
    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def paged(self, path: str, params: dict | None = None, limit_pages: int = 20) -> list:
        """Every item of a list endpoint (follows ``Link: rel=next``)."""
        params = {"per_page": 100, **(params or {})}
        items: list = []
        for page in range(1, limit_pages + 1):
            resp = self.get(path, params={**params, "page": page})
            batch = resp.data or []
            items.extend(batch)
            if len(batch) < params["per_page"] or 'rel="next"' not in (resp.headers.get("link") or ""):
                break
        return items
