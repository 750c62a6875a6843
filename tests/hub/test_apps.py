"""GitHub Apps: JWTs, installation tokens bought with them, and what those tokens may do.

Every client here is PyGithub's (``Auth.AppAuth(...).get_installation_auth(...)``,
``GithubIntegration``) over HTTP, except where a malformed JWT has to be sent by hand.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from github import (
    Auth,
    BadCredentialsException,
    Github,
    GithubException,
    GithubIntegration,
    UnknownObjectException,
)

from sentinel_celery.hub import Hub, generate_app_key
from sentinel_celery.hub.api import build_router
from sentinel_celery.hub.apps import JWT_EXPIRED, JWT_TOO_LONG, JWT_UNDECODABLE

from .helpers import call
from .test_cli import running_hub

APP_ID, INSTALLATION_ID = 42, 7


class Clock:
    """A hub clock the test moves forward instead of sleeping."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def app_client(hub: Hub, private_pem: str, installation_id: int = INSTALLATION_ID, app_id: int = APP_ID) -> Github:
    auth = Auth.AppAuth(app_id, private_pem).get_installation_auth(installation_id)
    return Github(base_url=hub.base_url, auth=auth, retry=None)


def integration(hub: Hub, private_pem: str, app_id: int = APP_ID) -> GithubIntegration:
    return GithubIntegration(auth=Auth.AppAuth(app_id, private_pem), base_url=hub.base_url)


def signed(private_pem: str, **claims) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now - 60, "exp": now + 300, "iss": str(APP_ID), **claims}, private_pem, "RS256")


@pytest.fixture
def hub(github_hub_factory, github_app_key) -> Hub:
    """acme/app and acme/web in installation 7 of app 42; acme/secret in installation 8 of app 43."""
    other = generate_app_key()
    return github_hub_factory(
        repos=["acme/app", "acme/web", "acme/secret"],
        apps=[
            {
                "app_id": APP_ID,
                "public_key": github_app_key.public_pem,
                "installations": [{"id": INSTALLATION_ID, "repos": ["acme/app", "acme/web"]}],
            },
            {
                "app_id": 43,
                "slug": "other",
                "public_key": other.public_pem,
                "installations": [{"id": 8, "repos": ["acme/secret"]}],
            },
        ],
    )


def test_installation_token_reads_the_repo_and_creates_a_check_run_a_personal_token_cannot(hub, github_app_key):
    repo = app_client(hub, github_app_key.private_pem).get_repo("acme/app")
    assert repo.full_name == "acme/app" and repo.permissions.push is True
    sha = repo.get_commit("main").sha

    run = repo.create_check_run("sentinel/test", sha, status="in_progress")
    assert run.app.slug == "sentinel" and run.app.id == APP_ID
    issue = repo.create_issue("from the app")
    assert issue.user.login == "sentinel[bot]" and issue.user.type == "Bot"

    personal = hub.client().get_repo("acme/app")
    with pytest.raises(GithubException) as info:
        personal.create_check_run("sentinel/test", sha)
    assert info.value.status == 403
    assert [r.name for r in personal.get_commit(sha).get_check_runs()] == ["sentinel/test"]
    [minted] = hub.requests(path_prefix="/app/installations/")
    assert (minted.method, minted.status) == ("POST", 201)


def test_wrong_private_key_is_refused_and_mints_nothing(hub):
    gh = app_client(hub, generate_app_key().private_pem)
    with pytest.raises(GithubException) as info:
        gh.get_repo("acme/app")
    assert info.value.status == 401 and info.value.data["message"] == JWT_UNDECODABLE
    assert [r.status for r in hub.requests()] == [401]


def test_unknown_installation_and_another_apps_installation_are_404(hub, github_app_key):
    with pytest.raises(UnknownObjectException):
        app_client(hub, github_app_key.private_pem, installation_id=999).get_repo("acme/app")
    with pytest.raises(UnknownObjectException):
        app_client(hub, github_app_key.private_pem, installation_id=8).get_repo("acme/secret")


def test_minted_token_sees_only_its_installations_repos(hub, github_app_key):
    gh = app_client(hub, github_app_key.private_pem)
    assert gh.get_repo("acme/web").full_name == "acme/web"
    with pytest.raises(UnknownObjectException):
        gh.get_repo("acme/secret")
    assert hub.client().get_repo("acme/secret").full_name == "acme/secret"  # it exists: the token cannot see it


def test_minted_token_expires_after_an_hour_of_hub_time(github_hub_factory, github_app_key):
    clock = Clock()
    hub = github_hub_factory(clock=clock)
    hub.add_app(APP_ID, github_app_key.public_pem, {INSTALLATION_ID: ["acme/app"]})
    gh = app_client(hub, github_app_key.private_pem)
    assert gh.get_repo("acme/app").name == "app"
    clock.advance(3599)
    assert gh.get_repo("acme/app").name == "app"

    clock.advance(2)  # the client still thinks its token good for an hour: it was told by the real clock
    with pytest.raises(BadCredentialsException) as info:
        gh.get_repo("acme/app")
    assert info.value.status == 401 and info.value.data["message"] == "Bad credentials"
    assert app_client(hub, github_app_key.private_pem).get_repo("acme/app").name == "app"  # a new one works
    assert len(hub.requests(method="POST", path_prefix="/app/installations/7/access_tokens")) == 2


def test_expires_at_tells_pygithub_when_to_buy_a_new_token(github_hub_factory, github_app_key):
    # by the hub's clock tokens are minted 3590 s ago: expires_at is 10 s away, inside PyGithub's 20 s margin
    hub = github_hub_factory(clock=Clock(time.time() - 3590))
    hub.add_app(APP_ID, github_app_key.public_pem, {INSTALLATION_ID: ["acme/app"]})
    gh = app_client(hub, github_app_key.private_pem)
    for _ in range(3):
        gh.get_repo("acme/app")
    assert len(hub.requests(method="POST", path_prefix="/app/installations/")) == 3

    fresh = github_hub_factory()
    fresh.add_app(APP_ID, github_app_key.public_pem, {INSTALLATION_ID: ["acme/app"]})
    gh = app_client(fresh, github_app_key.private_pem)
    for _ in range(3):
        gh.get_repo("acme/app")
    assert len(fresh.requests(method="POST", path_prefix="/app/installations/")) == 1


@pytest.mark.parametrize(
    "make_jwt, message",
    [
        (lambda key: signed(key, iat=int(time.time()) - 1000, exp=int(time.time()) - 10), JWT_EXPIRED),
        (lambda key: signed(key, exp=int(time.time()) + 3600), JWT_TOO_LONG),
        (lambda key: signed(generate_app_key().private_pem), JWT_UNDECODABLE),
        (lambda key: signed(key, iss="999"), JWT_UNDECODABLE),
        (lambda key: jwt.encode({"iat": int(time.time()), "exp": int(time.time()) + 60, "iss": "42"}, None, "none"),
         JWT_UNDECODABLE),
        (lambda key: jwt.encode({"iss": "42"}, key, "RS256"), JWT_EXPIRED),
        (lambda key: "not.a.jwt", JWT_UNDECODABLE),
    ],
    ids=["expired", "exp-too-far", "other-key", "unknown-app", "unsigned", "no-exp", "garbage"],
)
def test_bad_jwts_get_githubs_401_messages(hub, github_app_key, make_jwt, message):
    token = make_jwt(github_app_key.private_pem)
    response = call(hub, "POST", "/app/installations/7/access_tokens", token=None,
                    headers={"Authorization": f"Bearer {token}"}, json={"permissions": {}})
    assert response.status_code == 401
    assert response.json()["message"] == message
    assert hub.requests(status=201) == []


def test_a_jwt_is_not_a_token_and_a_token_is_not_a_jwt(hub, github_app_key):
    as_app = Github(base_url=hub.base_url, auth=Auth.AppAuth(APP_ID, github_app_key.private_pem), retry=None)
    with pytest.raises(BadCredentialsException):
        as_app.get_repo("acme/app")
    installation_token = integration(hub, github_app_key.private_pem).get_access_token(INSTALLATION_ID).token
    for token in (hub.token, installation_token):
        response = call(hub, "GET", "/app", token=token)
        assert response.status_code == 401 and response.json()["message"] == JWT_UNDECODABLE
    assert call(hub, "GET", "/app", token=None).json()["message"] == "Requires authentication"


def test_get_app_through_github_integration(hub, github_app_key):
    app = integration(hub, github_app_key.private_pem).get_app()
    assert (app.id, app.slug, app.owner.login) == (APP_ID, "sentinel", "acme")
    assert app.html_url == f"{hub.base_url}/apps/sentinel"
    assert app.permissions["checks"] == "write"
    jwt_token = Auth.AppAuth(43, generate_app_key().private_pem).create_jwt()
    assert call(hub, "GET", "/app", token=jwt_token).status_code == 401  # app 43 has another key


def test_requested_permissions_narrow_the_token(hub, github_app_key):
    gi = integration(hub, github_app_key.private_pem)
    grant = gi.get_access_token(INSTALLATION_ID, permissions={"issues": "read", "metadata": "read"})
    assert grant.permissions == {"issues": "read", "metadata": "read"}
    assert grant.repository_selection == "selected"
    assert grant.expires_at.timestamp() == pytest.approx(time.time() + 3600, abs=5)
    repo = Github(base_url=hub.base_url, auth=Auth.Token(grant.token), retry=None).get_repo("acme/app")
    with pytest.raises(GithubException) as info:
        repo.create_issue("read-only token")
    assert info.value.status == 403 and info.value.data["message"] == "Resource not accessible by integration"
    with pytest.raises(GithubException) as info:
        gi.get_access_token(INSTALLATION_ID, permissions={"administration": "write"})
    assert info.value.status == 422
    with pytest.raises(GithubException) as info:
        gi.get_access_token(INSTALLATION_ID, permissions={"metadata": "write"})
    assert info.value.status == 422


def test_requested_repositories_narrow_the_token(hub, github_app_key):
    headers = {"Authorization": f"Bearer {Auth.AppAuth(APP_ID, github_app_key.private_pem).create_jwt()}"}
    path = "/app/installations/7/access_tokens"
    response = call(hub, "POST", path, token=None, headers=headers, json={"repositories": ["web"]})
    assert response.status_code == 201
    assert [r["full_name"] for r in response.json()["repositories"]] == ["acme/web"]
    gh = Github(base_url=hub.base_url, auth=Auth.Token(response.json()["token"]), retry=None)
    assert gh.get_repo("acme/web").name == "web"
    with pytest.raises(UnknownObjectException):
        gh.get_repo("acme/app")
    for body in ({"repositories": ["secret"]}, {"repository_ids": [999]}):
        response = call(hub, "POST", path, token=None, headers=headers, json=body)
        assert response.status_code == 422, body


def test_an_installations_tokens_share_one_rate_limit(github_hub_factory, github_app_key):
    hub = github_hub_factory(limits={"core": 2})
    hub.add_app(APP_ID, github_app_key.public_pem, {INSTALLATION_ID: ["acme/app"]})
    first = app_client(hub, github_app_key.private_pem)
    second = app_client(hub, github_app_key.private_pem)
    first.get_repo("acme/app")
    second.get_repo("acme/app")
    with pytest.raises(GithubException) as info:
        first.get_repo("acme/app")
    assert info.value.status == 403
    assert info.value.data["message"].startswith("API rate limit exceeded for installation ID 7.")


def test_request_log_and_admin_api_never_hold_tokens_or_jwts(hub, github_app_key):
    signed_jwt = Auth.AppAuth(APP_ID, github_app_key.private_pem).create_jwt()
    minted = call(hub, "POST", "/app/installations/7/access_tokens", token=None,
                  headers={"Authorization": f"Bearer {signed_jwt}"}).json()["token"]
    assert minted.startswith("ghs_")
    call(hub, "GET", "/repos/acme/app", token=minted)
    log = call(hub, "GET", "/_hub/requests").json()["requests"]
    assert [r["token"] for r in log] == ["app-sentinel", "app-sentinel-installation-7"]
    dumped = json.dumps(log) + json.dumps(call(hub, "GET", "/_hub/tokens").json())
    assert minted not in dumped and signed_jwt not in dumped


def test_tokens_file_apps_section(tmp_path, github_app_key):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "app.pem").write_text(github_app_key.private_pem)  # a private key: its public half is kept
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({
        "tokens": [{"token": "owner-t", "access": "admin"}],
        "apps": [{"app_id": APP_ID, "slug": "ci", "public_key_path": "keys/app.pem",
                  "installations": [{"id": INSTALLATION_ID, "repos": ["acme/app"]}]}],
    }))
    with Hub(tokens_file=str(path)) as hub:
        [app] = hub.apps.apps()
        assert "PRIVATE" not in app.public_key and app.slug == "ci"
        issue = app_client(hub, github_app_key.private_pem).get_repo("acme/app").create_issue("from ci")
        assert issue.user.login == "ci[bot]"
        assert call(hub, "GET", "/user", token="owner-t").json()["login"] == "acme"


@pytest.mark.parametrize(
    "apps, error",
    [
        ([{"app_id": 1, "public_key": "k", "installations": [], "private_key": "x"}],
         r"app 0: unknown keys \['private_key'\]"),
        ([{"app_id": 1, "public_key": "k", "installations": [{"id": 1, "repo": []}]}],
         r"app 0, installation 0: unknown keys \['repo'\]"),
        ([{"app_id": 1, "public_key": "not a key"}], "app 1: public_key is not a PEM-encoded RSA key"),
        ([{"app_id": 1, "public_key": "k", "installations": [{"id": 1, "repos": ["app"]}]}],
         "'app' is not 'owner/name'"),
        ([{"app_id": 1}], "give one of 'public_key'"),
        ([{"app_id": 1, "public_key_path": "missing.pem"}], "cannot read public_key_path"),
    ],
)
def test_bad_apps_in_a_tokens_file_are_named(tmp_path, apps, error):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"apps": apps}))
    with pytest.raises(ValueError, match=error):
        Hub(tokens_file=str(path))


def test_unknown_top_level_key_in_a_tokens_file_is_named(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [], "app": []}))
    with pytest.raises(ValueError, match=r"unknown keys \['app'\]"):
        Hub(tokens_file=str(path))


def test_two_apps_may_not_share_a_slug_or_an_installation(github_hub, github_app_key):
    github_hub.add_app(APP_ID, github_app_key.public_pem, {INSTALLATION_ID: ["acme/app"]})
    with pytest.raises(ValueError, match="two apps with the slug 'sentinel'"):
        github_hub.add_app(43, github_app_key.public_pem, {8: ["acme/app"]})
    with pytest.raises(ValueError, match=r"installation ids \[7\] belong to another app"):
        github_hub.add_app(43, github_app_key.public_pem, {INSTALLATION_ID: ["acme/app"]}, slug="other")


def test_cli_app_flag(tmp_path, github_app_key):
    key = tmp_path / "app.private-key.pem"
    key.write_text(github_app_key.private_pem)
    with running_hub("--repo", "acme/app", "--repo", "acme/web", "--app", f"{APP_ID}:{key}:{INSTALLATION_ID}") as (
        url,
        lines,
    ):
        assert f"app: {APP_ID} (sentinel[bot])  installation {INSTALLATION_ID}" in lines
        auth = Auth.AppAuth(APP_ID, github_app_key.private_pem).get_installation_auth(INSTALLATION_ID)
        gh = Github(base_url=url, auth=auth, retry=None)
        assert gh.get_repo("acme/web").create_check_run("ci", gh.get_repo("acme/web").get_commit("main").sha).id
        assert not any(github_app_key.private_pem.splitlines()[1] in line for line in lines)


def test_github_app_endpoints_have_their_own_module():
    routes = build_router().routes
    app_routes = {(r.method, r.pattern): r for r in routes if r.pattern == "/app" or r.pattern.startswith("/app/")}
    assert ("POST", "/app/installations/{installation_id:int}/access_tokens") in app_routes
    assert {r.handler.__module__ for r in app_routes.values()} == {"sentinel_celery.hub.api.apps"}
    assert {r.credentials for r in routes if r.handler.__module__ == "sentinel_celery.hub.api.apps"} == {"jwt"}
    assert [r.pattern for r in routes if r.credentials == "jwt" and r not in app_routes.values()] == []
