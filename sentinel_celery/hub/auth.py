"""Tokens: who may call the hub and what they may do.

Owns :class:`TokenSpec` (a token's owner, kind, access level and expiry),
:class:`TokenRegistry` (lookup by the ``Authorization`` header, GitHub's 401
messages), which credentials an endpoint takes (:func:`require_credentials`)
and the tokens-file format::

    {"tokens": [
        {"token": "ro-1", "label": "reader", "login": "viewer", "access": "read"},
        {"token": "ghs_1", "label": "sentinel-app", "kind": "app",
         "app_slug": "sentinel", "repos": ["acme/app"]}
    ],
     "apps": [
        {"app_id": 42, "slug": "sentinel", "public_key_path": "app.pem",
         "installations": [{"id": 7, "repos": ["acme/app"]}]}
    ]}

``access`` is ``read`` (GETs only), ``write`` (the default) or ``admin``
(write, plus collaborators and the ``/_hub`` admin API). ``kind`` is ``user``
(a personal access token, the default) or ``app`` (an app-installation token,
the only kind allowed to write check runs; its user is ``<app_slug>[bot]``).
``repos`` limits a token to some repositories; others answer 404, as GitHub
does for repositories a token cannot see.

``apps`` registers GitHub Apps (see :mod:`.apps`): a Bearer JWT signed with an
app's private key authenticates as the app itself, on the ``/app`` endpoints
only, and buys installation tokens (``ghs_``, ``kind="app"``) that expire after
an hour. ``public_key_path`` is relative to the tokens file; ``public_key``
gives the PEM inline.

Raw tokens never leave this module except through ``TokenSpec.token``; logs and
admin output carry ``label`` only.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from .apps import JWT_UNDECODABLE, AppRegistry, AppSpec
from .errors import HubError

Access = Literal["read", "write", "admin"]
Kind = Literal["user", "app"]
Credentials = Literal["token", "jwt"]  # what an endpoint takes: a personal/installation token, or an app's JWT
_ACCESS = ("read", "write", "admin")
_KINDS = ("user", "app")


def generate_token(kind: Kind = "user") -> str:
    """A fresh random token shaped like GitHub's (``ghp_`` personal, ``ghs_`` installation)."""
    prefix = "ghs_" if kind == "app" else "ghp_"
    return prefix + secrets.token_urlsafe(27).replace("-", "A").replace("_", "b")[:36]


@dataclass(frozen=True)
class TokenSpec:
    token: str = field(repr=False)
    login: str
    label: str
    kind: Kind = "user"
    access: Access = "write"
    repos: tuple[str, ...] | None = None
    app_slug: str = "sentinel"
    app_id: int = 1
    installation_id: int = 1
    expires_at: float | None = None  # epoch seconds by the hub's clock; None: never

    def __post_init__(self) -> None:
        if self.access not in _ACCESS:
            raise ValueError(f"token {self.label!r}: access must be one of {_ACCESS}, not {self.access!r}")
        if self.kind not in _KINDS:
            raise ValueError(f"token {self.label!r}: kind must be one of {_KINDS}, not {self.kind!r}")
        if not self.token:
            raise ValueError(f"token {self.label!r}: empty token")

    @property
    def can_write(self) -> bool:
        return self.access in ("write", "admin")

    @property
    def is_admin(self) -> bool:
        return self.access == "admin"

    @property
    def is_app(self) -> bool:
        return self.kind == "app"

    @property
    def user_login(self) -> str:
        return f"{self.app_slug}[bot]" if self.is_app else self.login

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def same_installation(self, other: "TokenSpec") -> bool:
        return (
            self.is_app
            and other.is_app
            and (self.app_id, self.installation_id) == (other.app_id, other.installation_id)
        )

    def sees_repo(self, full_name: str) -> bool:
        return self.repos is None or full_name.lower() in {r.lower() for r in self.repos}

    @property
    def forbidden_message(self) -> str:
        """GitHub's message when this token lacks a permission."""
        if self.is_app:
            return "Resource not accessible by integration"
        return "Resource not accessible by personal access token"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, default_login: str, index: int = 0) -> "TokenSpec":
        known = {"token", "login", "label", "kind", "access", "repos", "app_slug", "app_id", "installation_id"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"tokens file entry {index}: unknown keys {sorted(unknown)}")
        if "token" not in data:
            raise ValueError(f"tokens file entry {index}: 'token' is required")
        login = str(data.get("login") or default_login)
        kind = data.get("kind", "user")
        repos = data.get("repos")
        return cls(
            token=str(data["token"]),
            login=login,
            label=str(data.get("label") or f"{kind}-{login}-{index}"),
            kind=kind,
            access=data.get("access", "write"),
            repos=tuple(repos) if repos is not None else None,
            app_slug=str(data.get("app_slug", "sentinel")),
            app_id=int(data.get("app_id", 1)),
            installation_id=int(data.get("installation_id", index + 1)),
        )


def load_tokens_file(path: str | Path, *, default_login: str) -> tuple[list[TokenSpec], list[AppSpec]]:
    """Read a tokens file: ``{"tokens": [...], "apps": [...]}`` (either may be left out) or a bare list of tokens."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        unknown = set(data) - {"tokens", "apps", "webhooks"}  # webhooks: see webhooks.py
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        if not data:
            raise ValueError(f'{path}: expected {{"tokens": [...]}} and/or {{"apps": [...]}}')
    entries = data.get("tokens", []) if isinstance(data, dict) else data
    apps = data.get("apps", []) if isinstance(data, dict) else []
    if not isinstance(entries, list):
        raise ValueError(f'{path}: expected a list of tokens or {{"tokens": [...]}}')
    if not isinstance(apps, list):
        raise ValueError(f'{path}: expected {{"apps": [...]}} to be a list')
    tokens = [TokenSpec.from_dict(entry, default_login=default_login, index=i) for i, entry in enumerate(entries)]
    return tokens, [AppSpec.from_dict(entry, index=i, base_dir=path.parent) for i, entry in enumerate(apps)]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's spec plus its user's row id.

    ``app`` is set when the caller signed a JWT as that GitHub App rather than
    sending a token; only ``/app`` endpoints take such callers.
    """

    spec: TokenSpec
    user_id: int
    app: AppSpec | None = None

    @property
    def label(self) -> str:
        return self.spec.label


def require_credentials(principal: Principal | None, credentials: Credentials) -> None:
    """Refuse a caller holding the other kind of credentials than the endpoint takes (GitHub: 401 both ways)."""
    as_app = principal is not None and principal.app is not None
    if credentials == "jwt" and not as_app:
        raise HubError(401, JWT_UNDECODABLE)
    if credentials == "token" and as_app:
        raise HubError(401, "Bad credentials")


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2  # header.payload.signature; GitHub's tokens have no dots


def parse_authorization(header: str | None) -> str | None:
    """The token in ``token X`` / ``Bearer X``; '' for a header of another scheme; None for no header."""
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return ""


class TokenRegistry:
    """The tokens the hub accepts, and the apps whose JWTs it accepts; safe to change while requests are served.

    ``clock`` tells when a token with an ``expires_at`` has expired.
    """

    def __init__(self, apps: AppRegistry | None = None, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, Principal] = {}
        self._by_app: dict[int, Principal] = {}  # who a valid JWT of each app authenticates as
        self.apps = apps or AppRegistry()
        self._clock = clock

    def add(self, principal: Principal) -> None:
        """Accept a token; a principal with ``app`` set is the app itself, reached by its JWTs only."""
        app = principal.app
        if app is not None:
            self.apps.add(app)
            with self._lock:
                self._by_app[app.app_id] = principal
            return
        with self._lock:
            self._by_token[principal.spec.token] = principal

    def remove(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def principals(self) -> Iterable[Principal]:
        with self._lock:
            return list(self._by_token.values())

    def prune_expired(self) -> None:
        now = self._clock()
        with self._lock:
            for token in [t for t, p in self._by_token.items() if p.spec.expired(now)]:
                del self._by_token[token]

    def authenticate(self, header: str | None) -> Principal:
        token = parse_authorization(header)
        if token is None:
            raise HubError(401, "Requires authentication")
        with self._lock:
            principal = self._by_token.get(token) if token else None
        if principal is None:
            if token and _looks_like_jwt(token):
                return self._app_principal(self.apps.authenticate(token))
            raise HubError(401, "Bad credentials")
        if principal.spec.expired(self._clock()):
            self.remove(token)
            raise HubError(401, "Bad credentials")
        return principal

    def _app_principal(self, app: AppSpec) -> Principal:
        with self._lock:
            principal = self._by_app.get(app.app_id)
        if principal is None:  # registered with the AppRegistry directly, not through add()
            raise HubError(401, JWT_UNDECODABLE)
        return principal
