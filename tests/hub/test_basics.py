"""Users, repository, rate-limit document, URL prefixes and GitHub's JSON conventions."""

from __future__ import annotations

import base64
import re

import pytest
from github import Github, GithubException, UnknownObjectException

from .helpers import call

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_authenticated_user_and_repository(github_hub):
    gh = github_hub.client()
    me = gh.get_user()
    assert me.login == github_hub.owner == "acme"
    repo = gh.get_repo(github_hub.repo)
    assert repo.full_name == "acme/app"
    assert repo.default_branch == "main"
    assert repo.owner.login == "acme"
    assert repo.permissions.admin is True
    assert repo.html_url == f"{github_hub.base_url}/acme/app"
    assert repo.url == f"{github_hub.base_url}/repos/acme/app"


def test_bodies_follow_github_conventions(github_hub):
    body = call(github_hub, "GET", "/repos/acme/app").json()
    assert base64.b64decode(body["node_id"]).decode() == f"010:Repository{body['id']}"
    assert ISO_Z.match(body["created_at"]) and ISO_Z.match(body["pushed_at"])
    assert body["owner"]["type"] == "User" and body["owner"]["url"].endswith("/users/acme")
    assert body["issues_url"] == f"{github_hub.base_url}/repos/acme/app/issues{{/number}}"


def test_api_v3_prefix_serves_the_same_api_and_keeps_the_prefix_in_urls(github_hub):
    gh = github_hub.client(api_v3=True)
    repo = gh.get_repo(github_hub.repo)
    assert repo.url == f"{github_hub.api_v3_url}/repos/acme/app"
    issue = repo.create_issue("via enterprise prefix")
    assert issue.url.startswith(github_hub.api_v3_url)
    assert issue.html_url == f"{github_hub.base_url}/acme/app/issues/{issue.number}"  # web pages stay at the root
    issue.edit(state="closed")  # PyGithub follows issue.url, so the prefix must round-trip
    assert repo.get_issue(issue.number).state == "closed"
    assert [r.path for r in github_hub.requests()][-1] == f"/repos/acme/app/issues/{issue.number}"


def test_unknown_path_is_github_404(github_hub):
    response = call(github_hub, "GET", "/repos/acme/app/no-such-thing")
    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"
    assert response.json()["documentation_url"].startswith("https://docs.github.com/")
    assert call(github_hub, "GET", "/nope/nothing/here/at/all").status_code == 404
    assert call(github_hub, "GET", "/api/v3/repos/acme/missing").status_code == 404


def test_unknown_repository_raises_unknown_object(github_hub):
    with pytest.raises(UnknownObjectException):
        github_hub.client().get_repo("acme/missing")


def test_rate_limit_document_is_not_counted(github_hub):
    gh = github_hub.client()
    before = gh.get_rate_limit().resources.core
    after = gh.get_rate_limit().resources.core
    assert before.limit == 5000
    assert after.remaining == before.remaining == 5000


def test_users_endpoint(github_hub):
    body = call(github_hub, "GET", "/users/acme").json()
    assert body["login"] == "acme" and "plan" not in body
    assert call(github_hub, "GET", "/users/nobody").status_code == 404


def test_validation_error_has_errors_array(github_hub):
    response = call(github_hub, "POST", "/repos/acme/app/issues", json={"body": "no title"})
    assert response.status_code == 422
    assert response.json()["message"] == "Validation Failed"
    assert response.json()["errors"] == [{"resource": "Issue", "code": "missing_field", "field": "title"}]
    bad_json = call(github_hub, "POST", "/repos/acme/app/issues", data=b"{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["message"] == "Problems parsing JSON"


def test_head_request_has_headers_and_no_body(github_hub):
    response = call(github_hub, "HEAD", "/repos/acme/app")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["ETag"].startswith('W/"')


def test_pygithub_with_default_throttling_still_works(github_hub):
    gh = Github(base_url=github_hub.base_url, auth=__import__("github").Auth.Token(github_hub.token), retry=None)
    with pytest.raises(GithubException) as info:
        gh.get_repo(github_hub.repo).create_label("bad", "zzzzzz")
    assert info.value.status == 422
