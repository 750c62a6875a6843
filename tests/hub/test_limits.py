"""Primary and secondary rate limits, their headers, PyGithub's GithubRetry against them, and ETag/304."""

from __future__ import annotations

import threading
import time

import pytest
from github import GithubRetry, RateLimitExceededException

from .helpers import call


def test_rate_limit_headers_count_down(github_hub):
    first = call(github_hub, "GET", "/repos/acme/app")
    second = call(github_hub, "GET", "/repos/acme/app")
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-resource"] == "core"
    assert (first.headers["x-ratelimit-used"], first.headers["x-ratelimit-remaining"]) == ("1", "4999")
    assert (second.headers["x-ratelimit-used"], second.headers["x-ratelimit-remaining"]) == ("2", "4998")
    assert int(first.headers["x-ratelimit-reset"]) > time.time()
    assert call(github_hub, "GET", "/user", token="bad").status_code == 401
    assert call(github_hub, "GET", "/rate_limit").json()["resources"]["core"]["used"] == 2  # 401s are not counted


def test_401s_carry_the_unauthenticated_limit_of_60_an_hour(github_hub):
    missing = call(github_hub, "GET", "/repos/acme/app", token=None)
    bad = call(github_hub, "GET", "/repos/acme/app", token="not-a-token")
    assert (missing.status_code, bad.status_code) == (401, 401)
    assert missing.headers["x-ratelimit-limit"] == "60" and missing.headers["x-ratelimit-resource"] == "core"
    assert (missing.headers["x-ratelimit-used"], missing.headers["x-ratelimit-remaining"]) == ("1", "59")
    assert (bad.headers["x-ratelimit-used"], bad.headers["x-ratelimit-remaining"]) == ("2", "58")
    assert time.time() < int(bad.headers["x-ratelimit-reset"]) <= time.time() + 3601
    assert call(github_hub, "GET", "/repos/acme/app").headers["x-ratelimit-limit"] == "5000"  # a token's own
    github_hub.reset_rate_limits()
    assert call(github_hub, "GET", "/user", token=None).headers["x-ratelimit-used"] == "1"


@pytest.mark.github_hub(limits={"unauthenticated": 1})
def test_unauthenticated_limit_is_configurable_and_reads_used_up(github_hub):
    call(github_hub, "GET", "/user", token=None)
    again = call(github_hub, "GET", "/user", token=None)
    assert again.status_code == 401 and again.headers["x-ratelimit-remaining"] == "0"


@pytest.mark.github_hub(limits={"core": 3})
def test_primary_exhaustion_is_403_with_githubs_message(github_hub):
    for _ in range(3):
        assert call(github_hub, "GET", "/repos/acme/app").status_code == 200
    response = call(github_hub, "GET", "/repos/acme/app")
    assert response.status_code == 403
    assert response.json()["message"].startswith("API rate limit exceeded for user ID ")
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in response.headers
    with pytest.raises(RateLimitExceededException):
        github_hub.client().get_repo(github_hub.repo)
    assert github_hub.client().get_rate_limit().resources.core.remaining == 0  # /rate_limit still answers


@pytest.mark.github_hub(limits={"core": 2, "window": 1.0})
def test_githubretry_waits_for_the_primary_reset(github_hub):
    gh = github_hub.client(retry=GithubRetry(total=3))
    gh.get_repo(github_hub.repo)
    gh.get_repo(github_hub.repo)
    started = time.monotonic()
    assert gh.get_repo(github_hub.repo).name == "app"  # 403 first, then retried after x-ratelimit-reset
    assert time.monotonic() - started >= 0.5
    assert [r.status for r in github_hub.requests()] == [200, 200, 403, 200]


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_write_limit_sends_retry_after_and_githubretry_honours_it(github_hub_factory, status):
    hub = github_hub_factory(limits={"writes_per_minute": 2, "minute_window": 1.0, "secondary_status": status})
    for n in range(2):
        assert call(hub, "POST", "/repos/acme/app/issues", json={"title": f"t{n}"}).status_code == 201
    blocked = call(hub, "POST", "/repos/acme/app/issues", json={"title": "t2"})
    assert blocked.status_code == status
    assert blocked.json()["message"].startswith("You have exceeded a secondary rate limit")
    assert blocked.headers["retry-after"] == "1"

    gh = hub.client(retry=GithubRetry(total=3))
    started = time.monotonic()
    issue = gh.get_repo(hub.repo).create_issue("after waiting")
    assert time.monotonic() - started >= 0.9  # slept retry-after
    assert issue.number == 3
    statuses = [r.status for r in hub.requests(method="POST")]
    assert statuses[-2:] == [status, 201]


@pytest.mark.github_hub(limits={"writes_per_hour": 2})
def test_secondary_hourly_write_limit(github_hub):
    for n in range(2):
        call(github_hub, "POST", "/repos/acme/app/issues", json={"title": f"t{n}"})
    blocked = call(github_hub, "PATCH", "/repos/acme/app/issues/1", json={"state": "closed"})
    assert blocked.status_code == 403 and int(blocked.headers["retry-after"]) > 3000
    assert call(github_hub, "GET", "/repos/acme/app/issues/1").json()["state"] == "open"  # reads still pass


@pytest.mark.github_hub(limits={"max_concurrency": 1}, faults={"latency_ms": 400})
def test_concurrency_limit(github_hub):
    results = []

    def get() -> None:
        results.append(call(github_hub, "GET", "/repos/acme/app"))

    threads = [threading.Thread(target=get) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in results) == [200, 403]
    rejected = next(r for r in results if r.status_code == 403)
    assert rejected.headers["retry-after"] == "1"
    assert "secondary rate limit" in rejected.json()["message"]


def test_etag_304_is_not_counted(github_hub):
    first = call(github_hub, "GET", "/repos/acme/app/issues")
    etag = first.headers["ETag"]
    again = call(github_hub, "GET", "/repos/acme/app/issues", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    assert again.headers["x-ratelimit-used"] == "1"
    call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "changes the list"})
    changed = call(github_hub, "GET", "/repos/acme/app/issues", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_pygithub_conditional_update(github_hub):
    repo = github_hub.client().get_repo(github_hub.repo)
    assert repo.update() is False  # 304
    assert github_hub.requests()[-1].status == 304
    repo.create_issue("bumps open_issues_count")
    assert repo.update() is True
    assert repo.open_issues_count == 1


def test_forced_exhaustion_fault(github_hub):
    github_hub.set_faults(exhaust_rate_limit=True)
    response = call(github_hub, "GET", "/repos/acme/app")
    assert response.status_code == 403 and response.headers["x-ratelimit-remaining"] == "0"
    assert response.json()["message"].startswith("API rate limit exceeded")
    assert call(github_hub, "GET", "/rate_limit").json()["rate"]["remaining"] == 0
    github_hub.set_faults(exhaust_rate_limit=False)
    assert call(github_hub, "GET", "/repos/acme/app").status_code == 200
