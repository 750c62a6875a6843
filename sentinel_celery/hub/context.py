"""What an API handler sees of its request.

Owns :class:`RequestContext` (the hub's state, the caller, the URLs to put
in bodies, body and query accessors, repository lookup with GitHub's access
rules) and pagination with GitHub's ``Link`` header.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import Any, Sequence

from .apiversion import DEFAULT_VERSION
from .auth import Principal
from .errors import HubError, not_found
from .routing import Response
from .state import HubState
from .store import Store

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 30


@dataclass(frozen=True)
class Urls:
    """Where this request's client reaches the hub: ``api`` for JSON ``url`` fields, ``web`` for ``html_url``."""

    api: str  # "http://127.0.0.1:8765" or "http://127.0.0.1:8765/api/v3", no trailing slash
    web: str  # "http://127.0.0.1:8765"

    def repo_api(self, full_name: str) -> str:
        return f"{self.api}/repos/{full_name}"

    def repo_web(self, full_name: str) -> str:
        return f"{self.web}/{full_name}"


class RequestContext:
    def __init__(
        self,
        *,
        state: HubState,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        principal: Principal | None,
        urls: Urls,
        api_version: str = DEFAULT_VERSION,
    ) -> None:
        self.state = state
        self.api_version = api_version  # X-GitHub-Api-Version, for the few shapes that differ by version
        self.store: Store = state.store
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.raw_body = body
        self.principal = principal
        self.urls = urls
        self._json: Any = None
        self._json_loaded = False

    # caller --------------------------------------------------------------
    @property
    def caller(self) -> Principal:
        if self.principal is None:  # the pipeline authenticates before any handler runs
            raise HubError(401, "Requires authentication")
        return self.principal

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    # input ---------------------------------------------------------------
    def json(self) -> Any:
        if not self._json_loaded:
            self._json_loaded = True
            if self.raw_body.strip():
                try:
                    self._json = json.loads(self.raw_body)
                except (ValueError, UnicodeDecodeError):
                    raise HubError(400, "Problems parsing JSON") from None
        return self._json

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise HubError(400, "Problems parsing JSON")
        return data

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def int_arg(self, name: str, default: int) -> int:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise HubError(400, f"Invalid value for parameter '{name}': {value!r}") from None

    # repositories --------------------------------------------------------
    def repo(self, owner: str, name: str) -> sqlite3.Row:
        """The repository, or 404 if missing or invisible to this token; 403 for a write without write access."""
        row = self.store.repo(owner, name)
        if row is None or not self.caller.spec.sees_repo(row["full_name"]):
            raise not_found()
        if self.is_write and not self.caller.spec.can_write:
            raise HubError(403, self.caller.spec.forbidden_message)
        return row

    def require_admin(self) -> None:
        if not self.caller.spec.is_admin:
            raise HubError(403, self.caller.spec.forbidden_message)

    # output --------------------------------------------------------------
    def paginate(self, items: Sequence[Any], *, status: int = 200) -> Response:
        """One page of ``items`` (``page``/``per_page`` from the query) with a ``Link`` header."""
        per_page = min(max(self.int_arg("per_page", DEFAULT_PER_PAGE), 1), MAX_PER_PAGE)
        page = max(self.int_arg("page", 1), 1)
        last = max(1, -(-len(items) // per_page))
        chunk = list(items[(page - 1) * per_page : page * per_page])
        links = []
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        if page > 1:
            links += [(1, "first"), (min(page - 1, last), "prev")]
        headers = {}
        if links:
            headers["Link"] = ", ".join(f'<{self.page_url(n, per_page)}>; rel="{rel}"' for n, rel in links)
        return Response(status, chunk, headers)

    def page_url(self, page: int, per_page: int) -> str:
        params = [(k, v) for k, values in self.query.items() if k not in ("page", "per_page") for v in values]
        params += [("per_page", str(per_page)), ("page", str(page))]
        return f"{self.urls.api}{self.path}?{urllib.parse.urlencode(params)}"
