"""The :class:`Hub`: one running GitHub-compatible API, its state and its knobs.

Owns the composition (the :class:`~.state.HubState`, the pipeline, the HTTP
server), the server thread's life cycle, and the Python API that tests,
``sentinel demo`` and the ``sentinel hub`` command use::

    with Hub(repos=["acme/app"]) as hub:
        gh = hub.client()                      # a PyGithub client for hub.token
        gh.get_repo(hub.repo).create_issue("hello")
        hub.set_faults(fail_next=1)
        hub.requests(method="POST")           # what clients sent

GitHub Apps (:meth:`Hub.add_app`, ``apps=``) sign JWTs that buy installation
tokens from ``POST /app/installations/{id}/access_tokens``; those expire by
the hub's ``clock``, which tests may move forward.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .apps import AppSpec
from .auth import Access, Principal, TokenSpec, generate_token, load_tokens_file
from .faults import Faults
from .loopback import is_loopback
from .pipeline import Pipeline
from .ratelimit import Limits, Quota
from .requestlog import LoggedRequest, RequestLog
from .server import HubHTTPServer
from .state import HubState
from .store import Store
from .webhooks import Delivery, Hook

if TYPE_CHECKING:
    import sqlite3

    from github import Github

DEFAULT_REPO = "acme/app"


def _file_webhooks(path: str) -> list[Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data.get("webhooks", []) if isinstance(data, dict) else []


class Hub:
    """A GitHub-compatible REST API on a loopback port.

    :param db: SQLite path, or ``":memory:"`` (the default).
    :param repos: repositories to create if missing (``"owner/name"``). With none
        given and an empty database, ``acme/app`` is created.
    :param tokens: tokens to accept: a string is a full-access (admin) token of
        the first repository's owner; a :class:`TokenSpec` or tokens-file style
        dict gives kind, access and repositories. With none here nor in
        ``tokens_file``, one admin token is generated (``generated_token``).
    :param tokens_file: a JSON tokens file (see :mod:`sentinel_celery.hub.auth`), with
        tokens and/or GitHub Apps.
    :param apps: GitHub Apps to accept: :class:`~.apps.AppSpec` or tokens-file style dicts
        (``{"app_id": 42, "public_key": PEM, "installations": [{"id": 7, "repos": [...]}]}``).
    :param host: a loopback address; anything else is refused.
    :param port: 0 picks a free port.
    :param limits: rate limits (:class:`Limits`), or keyword overrides as a dict.
    :param faults: initial fault settings (keywords of :meth:`Faults.configure`).
    :param seed: seed for the random failure draw.
    :param webhooks: hooks to deliver events to: dicts ``{"url", "secret", "repos", "events"}``
        (see :mod:`.webhooks`); a tokens file's ``"webhooks"`` list adds more.
    :param clock: the hub's time in epoch seconds, for installation tokens' expiry and rate-limit
        windows; a test passes one it can move forward. (JWTs are checked against the real time,
        which their signers use.)
    """

    def __init__(
        self,
        db: str = ":memory:",
        repos: Iterable[str] | None = None,
        tokens: Iterable[Any] | None = None,
        *,
        tokens_file: str | None = None,
        apps: Iterable[AppSpec | dict[str, Any]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | dict[str, Any] | None = None,
        faults: dict[str, Any] | None = None,
        seed: int | None = None,
        log_size: int = 100_000,
        webhooks: Iterable[dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"sentinel hub binds loopback addresses only, not {host!r}")
        self.host = host
        self._port = port
        self.faults = Faults(seed=seed)
        if faults:
            self.faults.configure(**faults)
        self.state = HubState(
            Store(db),
            limits if isinstance(limits, Limits) else Limits(**(limits or {})),
            self.faults,
            RequestLog(log_size),
            clock,
        )
        # the state's parts, for tests and tools that steer or read them
        self.store = self.state.store
        self.clock = clock
        self.limiter = self.state.limiter
        self.log = self.state.log
        self.apps = self.state.apps
        self.tokens = self.state.tokens
        self.webhooks = self.state.webhooks

        wanted = list(repos or [])
        created = [self.store.create_repo(full_name) for full_name in wanted]
        if not self.store.repos():
            created.append(self.store.create_repo(DEFAULT_REPO))
        first = created[0] if created else self.store.repos()[0]
        self.repo: str = first["full_name"]
        self.owner: str = self.repo.split("/", 1)[0]

        self.token: str | None = None
        self.generated_token: str | None = None
        for item in tokens or []:
            self._add_spec(self._spec(item))
        file_apps: list[AppSpec] = []
        if tokens_file:
            file_tokens, file_apps = load_tokens_file(tokens_file, default_login=self.owner)
            for spec in file_tokens:
                self._add_spec(spec)
            self.webhooks.add_from_dicts(_file_webhooks(tokens_file), tokens_file)
        self.webhooks.add_from_dicts(list(webhooks or []), "webhooks")
        for app in [*(apps or []), *file_apps]:
            self._add_app(app if isinstance(app, AppSpec) else AppSpec.from_dict(app))
        if self.token is None:  # no admin token given: make one, the CLI prints it
            self.token = self.generated_token = generate_token()
            self._add_spec(
                TokenSpec(token=self.token, login=self.owner, label=self._free_label("owner"), access="admin")
            )

        self.pipeline = Pipeline(self.state, fallback_host=lambda: self.address)
        self._server: HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # tokens --------------------------------------------------------------
    def _spec(self, item: Any) -> TokenSpec:
        if isinstance(item, TokenSpec):
            return item
        if isinstance(item, dict):
            return TokenSpec.from_dict(item, default_login=self.owner, index=len(list(self.tokens.principals())))
        return TokenSpec(token=str(item), login=self.owner, label=self._free_label("owner"), access="admin")

    def _free_label(self, base: str) -> str:
        taken = {p.label for p in self.tokens.principals()}
        return next(label for label in (base, *(f"{base}-{n}" for n in range(1, 10_000))) if label not in taken)

    def _add_spec(self, spec: TokenSpec) -> Principal:
        principal = self.state.add_principal(spec)
        if self.token is None and spec.is_admin:
            self.token = spec.token
        return principal

    def add_token(
        self,
        token: str | None = None,
        *,
        login: str | None = None,
        kind: str = "user",
        access: str = "write",
        label: str | None = None,
        repos: Iterable[str] | None = None,
        app_slug: str = "sentinel",
        app_id: int = 1,
        installation_id: int = 1,
    ) -> str:
        """Accept one more token and return it (generated when not given).

        A user token's login becomes a collaborator of the repositories it can
        see (``pull`` for read access, ``push`` for write, ``admin``).
        """
        value = token or generate_token("app" if kind == "app" else "user")
        login = login or self.owner
        spec = TokenSpec(
            token=value,
            login=login,
            label=label or self._free_label(f"{kind}-{login}-{access}"),
            kind=kind,  # type: ignore[arg-type]
            access=access,  # type: ignore[arg-type]
            repos=tuple(repos) if repos is not None else None,
            app_slug=app_slug,
            app_id=app_id,
            installation_id=installation_id,
        )
        self._add_spec(spec)
        return value

    # GitHub Apps ---------------------------------------------------------
    def add_app(
        self,
        app_id: int,
        public_key: str,
        installations: Mapping[int, Iterable[str]] | None = None,
        *,
        slug: str = "sentinel",
        owner: str | None = None,
    ) -> AppSpec:
        """Accept a GitHub App: JWTs verified by ``public_key`` (PEM; a private key's public half is used).

        ``installations`` maps installation ids to the repositories each covers;
        by default installation 1 covers every repository the hub has now.
        """
        if installations is None:
            installations = {1: [row["full_name"] for row in self.store.repos()]}
        return self._add_app(AppSpec.build(app_id, public_key, installations, slug=slug, owner=owner))

    def _add_app(self, app: AppSpec) -> AppSpec:
        return self.state.add_app(app, default_owner=self.owner)

    def mint_installation_token(
        self, app_id: int, installation_id: int, *, repos: Iterable[str] | None = None, access: Access = "write"
    ) -> TokenSpec:
        """A new installation token (``ghs_``) that expires an hour from now by the hub's clock.

        ``repos`` narrows it to some of the installation's repositories. What
        ``POST /app/installations/{id}/access_tokens`` answers with.
        """
        return self.state.mint_installation_token(app_id, installation_id, repos=repos, access=access)

    def quota_for(self, principal: Principal) -> Quota:
        return self.state.quota_for(principal)

    # state ---------------------------------------------------------------
    def create_repo(self, full_name: str) -> "sqlite3.Row":
        """Create ``owner/name`` (default labels, an initial commit) if missing."""
        return self.state.create_repo(full_name)

    def add_collaborator(self, login: str, permission: str = "push", repo: str | None = None) -> None:
        """Make ``login`` (created if unknown) a collaborator, so issues can be assigned to them."""
        owner, name = (repo or self.repo).split("/", 1)
        row = self.store.repo(owner, name)
        if row is None:
            raise ValueError(f"no repository {repo!r}")
        self.store.add_collaborator(row["id"], self.store.ensure_user(login), permission)

    # webhooks ------------------------------------------------------------
    def add_webhook(
        self,
        url: str,
        secret: str | None = None,
        *,
        repos: Iterable[str] | None = None,
        events: Iterable[str] | None = None,
    ) -> Hook:
        """Deliver ``events`` (default all: issues, issue_comment, label, push) of ``repos`` (default all) to ``url``."""
        return self.webhooks.add(url, secret, repos=repos, events=events)

    def deliveries(self, **filters: Any) -> list[Delivery]:
        """Webhook deliveries so far, oldest first (``event=``, ``repo=`` filter)."""
        return self.webhooks.deliveries(**filters)

    def redeliver(self, delivery_id: int) -> Delivery:
        """Send a delivery again with the same GUID, as GitHub's "Redeliver" does."""
        return self.webhooks.redeliver(delivery_id)

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Wait until every delivery was sent (or failed for good); False on timeout."""
        return self.webhooks.wait_idle(timeout)

    # faults and observation ---------------------------------------------
    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault settings (see :class:`~sentinel_celery.hub.faults.Faults`); returns them all."""
        self.faults.configure(**settings)
        return self.faults.snapshot()

    def clear_faults(self) -> None:
        self.faults.clear()

    def requests(self, **filters: Any) -> list[LoggedRequest]:
        """The request log, filtered like ``GET /_hub/requests`` (``since``, ``method``, ``path_prefix``, ...)."""
        return self.log.entries(**filters)

    def clear_requests(self) -> None:
        self.log.clear()

    def reset_rate_limits(self) -> None:
        self.state.reset_rate_limits()

    # life cycle ----------------------------------------------------------
    def bind(self) -> HubHTTPServer:
        """Open the listening socket (start() and serve_forever() call this)."""
        if self._server is None:
            self._server = HubHTTPServer(self.host, self._port, self.pipeline)
            self._port = self._server.server_address[1]
        return self._server

    def start(self) -> "Hub":
        """Serve in a background thread; returns self."""
        server = self.bind()
        if self._thread is None:
            self._thread = threading.Thread(target=server.serve_forever, args=(0.01,), name="sentinel-hub", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the CLI)."""
        try:
            self.bind().serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
                self._thread.join(timeout=5)
                self._thread = None
            server.close_connections()
            server.server_close()
        self.webhooks.close()
        self.store.close()

    def __enter__(self) -> "Hub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses -----------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None and self._port == 0:
            raise RuntimeError("the hub has no port until start()")
        return self._port

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT`` (give this to ``Github(base_url=...)``)."""
        return f"http://{self.address}"

    @property
    def api_v3_url(self) -> str:
        """The same API under GitHub Enterprise's prefix, ``http://127.0.0.1:PORT/api/v3``."""
        return f"{self.base_url}/api/v3"

    @property
    def web_url(self) -> str:
        return self.base_url

    def client(self, token: str | None = None, *, api_v3: bool = False, **kwargs: Any) -> "Github":
        """A PyGithub client for this hub (no client-side throttling; no retries unless ``retry=`` is given)."""
        # a lazy load: only clients need PyGithub (~0.25 s to import), the server itself never does
        from github import Auth, Github

        kwargs.setdefault("retry", None)
        kwargs.setdefault("seconds_between_requests", None)
        kwargs.setdefault("seconds_between_writes", None)
        kwargs.setdefault("timeout", 15)
        base_url = self.api_v3_url if api_v3 else self.base_url
        return Github(base_url=base_url, auth=Auth.Token(token or self.token or ""), **kwargs)
