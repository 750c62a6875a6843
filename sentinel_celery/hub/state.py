"""The parts of a running hub that a request can reach, and the operations on them.

Owns :class:`HubState`: the store, the tokens and GitHub Apps, the rate
limiters, the faults, the request log, the webhooks and the hub's clock, together with what
both the Python API (:class:`~sentinel_celery.hub.app.Hub`) and the endpoints
do with them: accepting a token (its user becomes a collaborator of the
repositories it can see), registering an app, minting an installation token,
creating a repository, and reading a caller's quota. Endpoints reach it as
``ctx.state``; nothing here knows about HTTP.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Callable, Iterable

from .apps import INSTALLATION_TOKEN_LIFETIME, AppRegistry, AppSpec
from .auth import Access, Principal, TokenRegistry, TokenSpec, generate_token
from .faults import Faults
from .ratelimit import Limits, Quota, RateLimiter
from .requestlog import RequestLog
from .store import Store
from .webhooks import Webhooks


def repo_permission(spec: TokenSpec) -> str:
    """The collaborator permission a user token's access level stands for."""
    return "admin" if spec.is_admin else "push" if spec.can_write else "pull"


class HubState:
    def __init__(
        self, store: Store, limits: Limits, faults: Faults, log: RequestLog, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.clock = clock
        self.limiter = RateLimiter(limits, clock=clock)
        self.unauthenticated = RateLimiter(limits.for_unauthenticated(), clock=clock)
        self.faults = faults
        self.log = log
        self.apps = AppRegistry()
        self.tokens = TokenRegistry(self.apps, clock=clock)
        self.webhooks = Webhooks()

    # tokens and apps -----------------------------------------------------
    def add_principal(self, spec: TokenSpec) -> Principal:
        """Accept ``spec``'s token; a user token's login becomes a collaborator where it has none yet."""
        # rate limits and the request log are keyed by label, so labels must be unique, except that
        # an installation's tokens share one: GitHub limits the installation, not each of its tokens
        if any(
            p.label == spec.label and p.spec.token != spec.token and not p.spec.same_installation(spec)
            for p in self.tokens.principals()
        ):
            raise ValueError(f"two tokens with the label {spec.label!r}")
        user_id = self.store.ensure_user(spec.user_login, "Bot" if spec.is_app else "User")
        if not spec.is_app:
            for row in self.store.repos():
                if spec.sees_repo(row["full_name"]) and self.store.permission(row["id"], user_id) is None:
                    self.store.add_collaborator(row["id"], user_id, repo_permission(spec))
        principal = Principal(spec, user_id)
        self.tokens.add(principal)
        return principal

    def add_app(self, app: AppSpec, default_owner: str) -> AppSpec:
        """Accept ``app``'s JWTs; they authenticate as ``<slug>[bot]``, on the ``/app`` endpoints only."""
        app = dataclasses.replace(app, owner=app.owner or default_owner)
        self.store.ensure_user(app.owner or default_owner)
        spec = TokenSpec(
            token=f"jwt:{app.app_id}",  # never looked up: a JWT is matched by the key that signed it
            login=app.bot_login,
            label=app.jwt_label,
            kind="app",
            access="read",
            repos=(),
            app_slug=app.slug,
            app_id=app.app_id,
            installation_id=0,
        )
        self.tokens.add(Principal(spec, self.store.ensure_user(app.bot_login, "Bot"), app=app))
        return app

    def mint_installation_token(
        self, app_id: int, installation_id: int, *, repos: Iterable[str] | None = None, access: Access = "write"
    ) -> TokenSpec:
        """A new installation token (``ghs_``) that expires an hour from now by the hub's clock.

        ``repos`` narrows it to some of the installation's repositories.
        """
        app = self.apps.get(app_id)
        installation = app.installation(installation_id) if app else None
        if app is None or installation is None:
            raise ValueError(f"no installation {installation_id} of app {app_id}")
        covered = {name.lower() for name in installation.repos}
        if repos is not None and not {name.lower() for name in repos} <= covered:
            raise ValueError(f"installation {installation_id} does not cover all of {sorted(repos)}")
        self.tokens.prune_expired()
        spec = TokenSpec(
            token=generate_token("app"),
            login=app.bot_login,
            label=app.installation_label(installation.id),
            kind="app",
            access=access,
            repos=tuple(repos) if repos is not None else installation.repos,
            app_slug=app.slug,
            app_id=app.app_id,
            installation_id=installation.id,
            expires_at=self.clock() + INSTALLATION_TOKEN_LIFETIME,
        )
        self.add_principal(spec)
        return spec

    # repositories --------------------------------------------------------
    def create_repo(self, full_name: str) -> sqlite3.Row:
        """Create ``owner/name`` if missing; user tokens that see it become its collaborators."""
        row = self.store.create_repo(full_name)
        for principal in self.tokens.principals():
            spec = principal.spec
            if (
                not spec.is_app
                and spec.sees_repo(row["full_name"])
                and self.store.permission(row["id"], principal.user_id) is None
            ):
                self.store.add_collaborator(row["id"], principal.user_id, repo_permission(spec))
        return row

    # rate limits ---------------------------------------------------------
    def quota_for(self, principal: Principal) -> Quota:
        exhausted, until = self.faults.rate_limit_exhausted()
        if exhausted:
            return self.limiter.exhausted(principal.label, until)
        return self.limiter.quota(principal.label)

    def count_unauthenticated(self) -> Quota:
        """Count a request turned away for its credentials against the unauthenticated limit."""
        return self.unauthenticated.consume("unauthenticated")[1]

    def reset_rate_limits(self) -> None:
        self.limiter.reset()
        self.unauthenticated.reset()
