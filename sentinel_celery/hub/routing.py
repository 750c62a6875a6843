"""Path routing for the hub's REST API, admin API and HTML view.

Owns :class:`Router` (``/repos/{owner}/{repo}/issues/{number:int}``-style
patterns compiled to regexes) and :class:`Response`, the value every handler
returns. Path parameters are percent-decoded after matching, so an encoded
``/`` inside a label name never splits a segment.

Each route says which credentials it takes: ``"token"`` (personal and
installation tokens, the default) or ``"jwt"`` (a GitHub App's own JWT, the
``/app`` endpoints); the pipeline refuses the other kind with a 401
(:func:`~.auth.require_credentials`) before the handler runs.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from .auth import Credentials

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"

_PARAM = re.compile(r"\{(\w+)(?::(int|path))?\}")
_KINDS = {None: r"[^/]+", "int": r"[0-9]+", "path": r".*"}


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable value, or str/bytes with a non-JSON content_type
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler
    int_params: frozenset[str]
    credentials: Credentials = "token"


def _compile(pattern: str) -> tuple[re.Pattern[str], frozenset[str]]:
    parts: list[str] = []
    ints: set[str] = set()
    pos = 0
    for match in _PARAM.finditer(pattern):
        parts.append(re.escape(pattern[pos : match.start()]))
        name, kind = match.group(1), match.group(2)
        if kind == "int":
            ints.add(name)
        parts.append(f"(?P<{name}>{_KINDS[kind]})")
        pos = match.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts) + "/?$"), frozenset(ints)


class Router:
    """An ordered list of routes; the first whose method and pattern match wins."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: Handler, *, credentials: Credentials = "token") -> None:
        regex, ints = _compile(pattern)
        self.routes.append(Route(method.upper(), pattern, regex, handler, ints, credentials))

    def route(self, method: str, pattern: str, *, credentials: Credentials = "token") -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self.add(method, pattern, handler, credentials=credentials)
            return handler

        return decorator

    def include(self, other: "Router") -> None:
        self.routes.extend(other.routes)

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, Any]] | None:
        for route in self.routes:
            if route.method != method:
                continue
            match = route.regex.match(path)
            if match is None:
                continue
            params: dict[str, Any] = {}
            for name, raw in match.groupdict().items():
                value = urllib.parse.unquote(raw)
                params[name] = int(value) if name in route.int_params else value
            return route, params
        return None

    def matches_path(self, path: str) -> bool:
        """Whether any route, whatever its method, matches ``path``."""
        return any(route.regex.match(path) for route in self.routes)
