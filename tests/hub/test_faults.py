"""Fault injection as clients see it, and the admin API that switches it and reads the request log."""

from __future__ import annotations

import time

import pytest
from github import GithubException, GithubRetry

from .helpers import call


def test_fail_next_through_the_admin_api(github_hub):
    snapshot = call(github_hub, "POST", "/_hub/faults", json={"fail_next": 2, "fail_status": 502}).json()
    assert snapshot["fail_next"] == 2
    gh = github_hub.client()
    for _ in range(2):
        with pytest.raises(GithubException) as info:
            gh.get_repo(github_hub.repo)
        assert info.value.status == 502 and info.value.data["message"] == "Server Error"
    assert gh.get_repo(github_hub.repo).name == "app"
    assert [r.status for r in github_hub.requests()] == [502, 502, 200]


def test_githubretry_rides_out_injected_5xx(github_hub):
    github_hub.set_faults(fail_next=2, fail_status=503)
    gh = github_hub.client(retry=GithubRetry(total=3, backoff_factor=0))
    assert gh.get_repo(github_hub.repo).full_name == "acme/app"
    assert [r.status for r in github_hub.requests()] == [503, 503, 200]


def test_seeded_fail_rate_is_reproducible(github_hub):
    def pattern() -> list[int]:
        github_hub.set_faults(fail_rate=0.5, seed=1234)
        return [call(github_hub, "GET", "/repos/acme/app").status_code for _ in range(16)]

    first, second = pattern(), pattern()
    assert first == second
    assert set(first) == {200, 502}


def test_fail_match_limits_failures_to_some_requests(github_hub):
    github_hub.set_faults(fail_rate=1.0, fail_match=r"^POST /repos/[^/]+/[^/]+/issues$")
    assert call(github_hub, "GET", "/repos/acme/app/issues").status_code == 200
    assert call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "x"}).status_code == 502
    github_hub.clear_faults()
    assert call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "x"}).status_code == 201


def test_fail_after_apply_changes_state_but_reports_an_error(github_hub):
    github_hub.set_faults(fail_next=1, fail_mode="after")
    response = call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "did it land?"})
    assert response.status_code == 502
    titles = [i["title"] for i in call(github_hub, "GET", "/repos/acme/app/issues").json()]
    assert titles == ["did it land?"]  # the write happened; a retrying client must not duplicate it


def test_outage_window_then_recovery(github_hub):
    call(github_hub, "POST", "/_hub/faults", json={"outage_seconds": 0.5})
    down = call(github_hub, "GET", "/repos/acme/app", token=None)
    assert down.status_code == 503  # before authentication, like a real outage
    assert call(github_hub, "GET", "/_hub/health", token=None).status_code == 200  # admin API is never faulted
    time.sleep(0.6)
    assert call(github_hub, "GET", "/repos/acme/app").status_code == 200


def test_outage_until_cleared(github_hub):
    github_hub.set_faults(outage=True)
    assert call(github_hub, "GET", "/user").status_code == 503
    assert call(github_hub, "GET", "/_hub/faults").json()["outage"] is True
    assert call(github_hub, "DELETE", "/_hub/faults").json()["outage"] is False
    assert call(github_hub, "GET", "/user").status_code == 200


def test_added_latency(github_hub):
    github_hub.set_faults(latency_ms=250)
    started = time.monotonic()
    call(github_hub, "GET", "/user")
    assert time.monotonic() - started >= 0.25
    assert github_hub.requests()[-1].duration_ms >= 250


def test_invalid_fault_settings_are_rejected(github_hub):
    response = call(github_hub, "POST", "/_hub/faults", json={"fail_rate": 2})
    assert response.status_code == 422
    assert call(github_hub, "POST", "/_hub/faults", json={"explode": True}).status_code == 422
    assert call(github_hub, "GET", "/_hub/faults").json()["fail_rate"] == 0.0


def test_request_log_filters_and_clear(github_hub):
    call(github_hub, "GET", "/repos/acme/app")
    mark = call(github_hub, "GET", "/_hub/requests").json()["last_seq"]
    call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "x"})
    call(github_hub, "GET", "/repos/acme/app/issues?state=all")
    newer = call(github_hub, "GET", f"/_hub/requests?since={mark}").json()["requests"]
    assert [(r["method"], r["path"], r["query"], r["status"]) for r in newer] == [
        ("POST", "/repos/acme/app/issues", "", 201),
        ("GET", "/repos/acme/app/issues", "state=all", 200),
    ]
    assert newer[0]["token"] == "owner" and newer[0]["time"].endswith("Z")
    posts = call(github_hub, "GET", "/_hub/requests?method=post").json()["requests"]
    assert len(posts) == 1
    assert len(call(github_hub, "GET", "/_hub/requests?path_prefix=/repos/acme/app/issues").json()["requests"]) == 2
    assert call(github_hub, "DELETE", "/_hub/requests").status_code == 204
    assert call(github_hub, "GET", "/_hub/requests").json()["requests"] == []


def test_admin_rate_limits_and_repos(github_hub):
    call(github_hub, "GET", "/user")
    assert call(github_hub, "GET", "/_hub/rate-limits").json()["owner"]["used"] == 1
    assert call(github_hub, "DELETE", "/_hub/rate-limits").status_code == 204
    assert call(github_hub, "GET", "/_hub/rate-limits").json()["owner"]["used"] == 0
    created = call(github_hub, "POST", "/_hub/repos", json={"full_name": "acme/second"})
    assert created.status_code == 201
    assert github_hub.client().get_repo("acme/second").default_branch == "main"
    assert call(github_hub, "POST", "/_hub/repos", json={"full_name": "no-slash"}).status_code == 422
