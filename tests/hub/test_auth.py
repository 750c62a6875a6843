"""Every authentication and authorisation error, and what the request log keeps of tokens."""

from __future__ import annotations

import json

import pytest
from github import (
    Auth,
    BadCredentialsException,
    Github,
    GithubException,
    UnknownObjectException,
)

from sentinel_celery.hub import Hub

from .helpers import call


def test_no_authorization_header_is_401_requires_authentication(github_hub):
    response = call(github_hub, "GET", "/repos/acme/app", token=None)
    assert response.status_code == 401
    assert response.json()["message"] == "Requires authentication"


def test_unknown_token_is_401_bad_credentials_for_pygithub(github_hub):
    gh = Github(base_url=github_hub.base_url, auth=Auth.Token("ghp_not-a-real-token"), retry=None)
    with pytest.raises(BadCredentialsException) as info:
        gh.get_repo(github_hub.repo)
    assert info.value.status == 401
    assert info.value.data["message"] == "Bad credentials"


def test_other_authorization_scheme_is_bad_credentials(github_hub):
    response = call(github_hub, "GET", "/user", token=None, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401 and response.json()["message"] == "Bad credentials"


def test_bearer_and_token_schemes_both_work(github_hub):
    for header in (f"token {github_hub.token}", f"Bearer {github_hub.token}", f"bearer {github_hub.token}"):
        response = call(github_hub, "GET", "/user", token=None, headers={"Authorization": header})
        assert response.status_code == 200, header
        assert response.json()["login"] == "acme"


def test_read_only_token_reads_but_cannot_write(github_hub):
    reader = github_hub.add_token(login="viewer", access="read", label="reader")
    repo = github_hub.client(reader).get_repo(github_hub.repo)
    assert repo.permissions.push is False
    with pytest.raises(GithubException) as info:
        repo.create_issue("should not be created")
    assert info.value.status == 403
    assert info.value.data["message"] == "Resource not accessible by personal access token"
    assert github_hub.client().get_repo(github_hub.repo).get_issues(state="all").totalCount == 0


def test_token_scoped_to_other_repositories_sees_404(github_hub):
    github_hub.create_repo("acme/other")
    scoped = github_hub.add_token(login="bot", repos=["acme/other"])
    gh = github_hub.client(scoped)
    assert gh.get_repo("acme/other").full_name == "acme/other"
    with pytest.raises(UnknownObjectException):
        gh.get_repo("acme/app")


def test_app_installation_token_cannot_read_user(github_hub):
    app_token = github_hub.add_token(kind="app", app_slug="sentinel")
    response = call(github_hub, "GET", "/user", token=app_token)
    assert response.status_code == 403
    assert response.json()["message"] == "Resource not accessible by integration"
    issue = github_hub.client(app_token).get_repo(github_hub.repo).create_issue("from the app")
    assert issue.user.login == "sentinel[bot]" and issue.user.type == "Bot"


def test_admin_api_needs_an_admin_token(github_hub):
    writer = github_hub.add_token(login="dev", access="write")
    assert call(github_hub, "GET", "/_hub/requests", token=None).status_code == 401
    assert call(github_hub, "GET", "/_hub/requests", token="wrong").status_code == 401
    assert call(github_hub, "GET", "/_hub/requests", token=writer).status_code == 403
    assert call(github_hub, "GET", "/_hub/requests").status_code == 200
    assert call(github_hub, "GET", "/_hub/health", token=None).json()["ok"] is True


def test_request_log_has_labels_never_raw_tokens(github_hub):
    secret = github_hub.add_token("ghp_SuperSecretValue123", login="dev", label="dev-token")
    call(github_hub, "GET", "/repos/acme/app", token=secret)
    call(github_hub, "GET", "/repos/acme/app", token="ghp_WrongSecret456")
    call(github_hub, "GET", "/repos/acme/app", token=None)
    log = call(github_hub, "GET", "/_hub/requests").json()["requests"]
    assert [(r["token"], r["status"]) for r in log] == [("dev-token", 200), ("invalid", 401), (None, 401)]
    dumped = json.dumps(log) + json.dumps(call(github_hub, "GET", "/_hub/tokens").json())
    assert "SuperSecret" not in dumped and "WrongSecret" not in dumped
    assert github_hub.token not in dumped


def test_tokens_file_gives_kinds_and_access(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {"token": "owner-t", "label": "owner", "access": "admin"},
                    {"token": "ro-t", "label": "reader", "login": "viewer", "access": "read"},
                    {"token": "ghs_app", "label": "app", "kind": "app", "app_slug": "sentinel"},
                ]
            }
        )
    )
    with Hub(tokens_file=str(path)) as hub:
        assert hub.token == "owner-t" and hub.generated_token is None
        assert call(hub, "GET", "/user", token="owner-t").json()["login"] == "acme"
        assert call(hub, "POST", "/repos/acme/app/issues", token="ro-t", json={"title": "x"}).status_code == 403
        assert call(hub, "GET", "/user", token="ghs_app").status_code == 403
        assert call(hub, "GET", "/_hub/tokens", token="owner-t").json()[1] == {
            "label": "reader",
            "login": "viewer",
            "kind": "user",
            "access": "read",
            "repos": None,
        }


def test_bad_tokens_file_is_rejected(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"token": "t", "access": "superuser"}]))
    with pytest.raises(ValueError, match="access must be one of"):
        Hub(tokens_file=str(path))


def test_hub_refuses_non_loopback_hosts():
    with pytest.raises(ValueError, match="loopback"):
        Hub(host="0.0.0.0")


def test_token_labels_are_unique(github_hub):
    first = github_hub.add_token(login="dev")
    second = github_hub.add_token(login="dev")
    labels = [t["label"] for t in call(github_hub, "GET", "/_hub/tokens").json()]
    assert len(labels) == len(set(labels)) == 3 and first != second
    with pytest.raises(ValueError, match="two tokens with the label"):
        github_hub.add_token("another", label="owner")
