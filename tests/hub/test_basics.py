"""Users, repository, rate-limit document, URL prefixes and GitHub's JSON conventions."""

from __future__ import annotations

import base64
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from github import Auth, Github, GithubException, UnknownObjectException

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


def test_authenticated_user_sees_a_private_view_of_themself(github_hub):
    assert call(github_hub, "GET", "/user").json()["user_view_type"] == "private"
    assert call(github_hub, "GET", "/users/acme").json()["user_view_type"] == "public"
    assert call(github_hub, "GET", "/repos/acme/app").json()["owner"]["user_view_type"] == "public"


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


def test_api_version_header_selects_a_supported_version_or_is_400(github_hub):
    default = call(github_hub, "GET", "/repos/acme/app")
    assert default.headers["X-GitHub-Api-Version-Selected"] == "2022-11-28"
    for version in ("2022-11-28", "2026-03-10"):
        chosen = call(github_hub, "GET", "/repos/acme/app", headers={"X-GitHub-Api-Version": version})
        assert chosen.status_code == 200 and chosen.headers["X-GitHub-Api-Version-Selected"] == version
    for version in ("v3", "2021-01-01"):
        refused = call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "t"},
                       headers={"X-GitHub-Api-Version": version})
        assert refused.status_code == 400
        assert refused.json()["message"].startswith(
            f'The version you specified in the "X-GitHub-Api-Version" request header, "{version}", '
            "is not a supported version."
        )
        assert '"2026-03-10" (most recent), "2022-11-28"' in refused.json()["message"]
    assert call(github_hub, "GET", "/repos/acme/app/issues").json() == []  # the refused requests changed nothing


def test_rate_limit_document_drops_rate_from_2026_03_10(github_hub):
    old = call(github_hub, "GET", "/rate_limit").json()
    new = call(github_hub, "GET", "/rate_limit", headers={"X-GitHub-Api-Version": "2026-03-10"}).json()
    assert old["rate"] == old["resources"]["core"]
    assert "rate" not in new and new["resources"]["core"]["limit"] == 5000


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
    bad_json = call(
        github_hub, "POST", "/repos/acme/app/issues", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["message"] == "Problems parsing JSON"


def test_head_request_has_headers_and_no_body(github_hub):
    response = call(github_hub, "HEAD", "/repos/acme/app")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["ETag"].startswith('W/"')


def test_plain_pygithub_client_gets_422_for_a_bad_label_colour(github_hub):
    gh = Github(base_url=github_hub.base_url, auth=Auth.Token(github_hub.token), retry=None)
    with pytest.raises(GithubException) as info:
        gh.get_repo(github_hub.repo).create_label("bad", "zzzzzz")
    assert info.value.status == 422
    assert info.value.data["errors"][0]["field"] == "color"


def test_many_workers_at_once_get_unique_issue_numbers(github_hub):
    def create(n: int) -> int:
        return call(github_hub, "POST", "/repos/acme/app/issues", json={"title": f"worker {n}"}).json()["number"]

    with ThreadPoolExecutor(max_workers=40) as pool:
        numbers = list(pool.map(create, range(60)))
    assert sorted(numbers) == list(range(1, 61))
    assert len(github_hub.requests(method="POST")) == 60


def test_session_hub_is_shared_but_cleaned(github_hub_session):
    hub = github_hub_session
    assert hub.requests() == [] and hub.faults.snapshot()["fail_next"] == 0
    hub.set_faults(fail_next=1)
    assert call(hub, "GET", "/user").status_code == 502
    assert call(hub, "GET", "/user").status_code == 200


def test_session_hub_faults_do_not_leak(github_hub_session):
    assert call(github_hub_session, "GET", "/user").status_code == 200
    assert [r.path for r in github_hub_session.requests()] == ["/user"]


def test_urls_follow_a_loopback_host_header_only(github_hub):
    port = github_hub.port
    via_localhost = call(github_hub, "GET", "/repos/acme/app", headers={"Host": f"localhost:{port}"}).json()
    assert via_localhost["url"] == f"http://localhost:{port}/repos/acme/app"
    spoofed = call(github_hub, "GET", "/repos/acme/app", headers={"Host": "evil.example:80"}).json()
    assert spoofed["url"] == f"{github_hub.base_url}/repos/acme/app"
    gh = Github(base_url=f"http://localhost:{port}", auth=Auth.Token(github_hub.token), retry=None)
    issue = gh.get_repo(github_hub.repo).create_issue("through localhost")
    issue.edit(body="PyGithub follows url fields on the same host")
    assert issue.url.startswith(f"http://localhost:{port}/")


def test_repository_names_are_validated(github_hub):
    with pytest.raises(ValueError, match="owner/name"):
        github_hub.create_repo("acme/<script>")
