"""Commit statuses (create, list, combined) and check runs (app tokens only)."""

from __future__ import annotations

import pytest
from github import GithubException

from .helpers import call


@pytest.fixture
def repo(github_hub):
    return github_hub.client().get_repo(github_hub.repo)


def test_statuses_and_combined_state(repo):
    commit = repo.get_commit("main")
    assert repo.get_commit(commit.sha).get_combined_status().state == "pending"  # no statuses yet
    commit.create_status("pending", target_url="http://ci/1", description="queued", context="ci/build")
    commit.create_status("success", context="ci/test")
    combined = commit.get_combined_status()
    assert combined.state == "pending" and combined.total_count == 2
    commit.create_status("success", context="ci/build")
    combined = commit.get_combined_status()
    assert combined.state == "success"
    assert sorted((s.context, s.state) for s in combined.statuses) == [("ci/build", "success"), ("ci/test", "success")]
    commit.create_status("error", context="ci/lint")
    assert commit.get_combined_status().state == "failure"
    statuses = list(commit.get_statuses())
    assert [s.state for s in statuses] == ["error", "success", "success", "pending"]  # newest first
    assert statuses[-1].target_url == "http://ci/1" and statuses[-1].creator.login == "acme"


def test_status_routes_by_branch_and_legacy_path(github_hub, repo):
    sha = repo.get_branch("main").commit.sha
    repo.get_commit(sha).create_status("failure", context="deploy")
    by_branch = call(github_hub, "GET", "/repos/acme/app/commits/main/status").json()
    assert by_branch["sha"] == sha and by_branch["state"] == "failure"
    assert [s["context"] for s in call(github_hub, "GET", f"/repos/acme/app/statuses/{sha}").json()] == ["deploy"]


def test_combined_status_pages_its_statuses_and_embeds_a_short_repository(github_hub, repo):
    commit = repo.get_commit("main")
    for n in range(5):
        commit.create_status("success" if n else "failure", context=f"ci/{n}")
    first = call(github_hub, "GET", "/repos/acme/app/commits/main/status", params={"per_page": 2})
    body = first.json()
    assert [s["context"] for s in body["statuses"]] == ["ci/0", "ci/1"]
    assert (body["total_count"], body["state"]) == (5, "failure")  # over all statuses, not the page
    assert 'rel="next"' in first.headers["Link"] and "page=3" in first.headers["Link"]  # last
    last = call(github_hub, "GET", "/repos/acme/app/commits/main/status", params={"per_page": 2, "page": 3})
    assert [s["context"] for s in last.json()["statuses"]] == ["ci/4"]
    assert 'rel="prev"' in last.headers["Link"] and 'rel="next"' not in last.headers["Link"]
    repository = body["repository"]
    assert "temp_clone_token" not in repository  # GitHub's schema says string; the hub has none to give
    assert repository["full_name"] == "acme/app" and repository["hooks_url"].endswith("/repos/acme/app/hooks")
    assert commit.get_combined_status().total_count == 5  # PyGithub still reads it


def test_refs_with_slashes_in_status_statuses_and_check_runs(github_hub, repo):
    sha = repo.get_branch("main").commit.sha
    repo.create_git_ref("refs/heads/rel/1.0", sha)
    repo.get_commit(sha).create_status("success", context="release")
    app_repo = github_hub.client(github_hub.add_token(kind="app")).get_repo(github_hub.repo)
    app_repo.create_check_run("release", sha, conclusion="success")
    combined = call(github_hub, "GET", "/repos/acme/app/commits/rel/1.0/status")
    assert combined.status_code == 200 and (combined.json()["sha"], combined.json()["state"]) == (sha, "success")
    listed = call(github_hub, "GET", "/repos/acme/app/commits/rel/1.0/statuses")
    assert [s["context"] for s in listed.json()] == ["release"]
    assert [s["context"] for s in call(github_hub, "GET", "/repos/acme/app/statuses/rel/1.0").json()] == ["release"]
    runs = call(github_hub, "GET", "/repos/acme/app/commits/rel/1.0/check-runs")
    assert runs.status_code == 200 and [r["name"] for r in runs.json()["check_runs"]] == ["release"]
    assert call(github_hub, "GET", "/repos/acme/app/commits/rel/1.0").json()["sha"] == sha
    assert call(github_hub, "GET", "/repos/acme/app/commits/rel%2F1.0/status").json()["sha"] == sha  # encoded too


def test_status_validation(github_hub, repo):
    sha = repo.get_branch("main").commit.sha
    bad_state = call(github_hub, "POST", f"/repos/acme/app/statuses/{sha}", json={"state": "great"})
    assert bad_state.status_code == 422 and bad_state.json()["errors"][0]["field"] == "state"
    no_commit = call(github_hub, "POST", f"/repos/acme/app/statuses/{'9' * 40}", json={"state": "success"})
    assert (no_commit.status_code, no_commit.json()["message"]) == (422, f"No commit found for SHA: {'9' * 40}")


def test_personal_token_cannot_create_or_update_check_runs(github_hub, repo):
    with pytest.raises(GithubException) as info:
        repo.create_check_run("sentinel", repo.get_branch("main").commit.sha)
    assert info.value.status == 403
    assert info.value.data["message"] == "You must authenticate via a GitHub App."
    assert info.value.data["documentation_url"].endswith("/checks/runs#create-a-check-run")
    app_repo = github_hub.client(github_hub.add_token(kind="app")).get_repo(github_hub.repo)
    run = app_repo.create_check_run("sentinel", repo.get_branch("main").commit.sha)
    denied = call(github_hub, "PATCH", f"/repos/acme/app/check-runs/{run.id}", json={"conclusion": "success"})
    assert (denied.status_code, denied.json()["message"]) == (403, "You must authenticate via a GitHub App.")


def test_app_token_creates_updates_and_lists_check_runs(github_hub):
    app_token = github_hub.add_token(kind="app", app_slug="sentinel-ci", app_id=42)
    repo = github_hub.client(app_token).get_repo(github_hub.repo)
    sha = repo.get_branch("main").commit.sha
    run = repo.create_check_run(
        "sentinel/tests",
        sha,
        status="in_progress",
        external_id="job-7",
        output={"title": "Running", "summary": "3 of 10"},
    )
    assert run.status == "in_progress" and run.conclusion is None
    assert run.app.slug == "sentinel-ci" and run.app.id == 42
    run.edit(conclusion="success", output={"title": "Done", "summary": "10 of 10"})
    fetched = github_hub.client().get_repo(github_hub.repo).get_check_run(run.id)  # reading needs no app token
    assert (fetched.status, fetched.conclusion, fetched.output.title) == ("completed", "success", "Done")
    assert fetched.completed_at is not None and fetched.external_id == "job-7"
    repo.create_check_run("sentinel/lint", sha, conclusion="failure")
    runs = repo.get_commit(sha).get_check_runs()
    assert runs.totalCount == 2
    assert sorted((r.name, r.conclusion) for r in runs) == [("sentinel/lint", "failure"), ("sentinel/tests", "success")]
    assert [r.name for r in repo.get_commit(sha).get_check_runs(check_name="sentinel/lint")] == ["sentinel/lint"]


def test_check_run_validation(github_hub):
    app_token = github_hub.add_token(kind="app")
    sha = github_hub.client().get_repo(github_hub.repo).get_branch("main").commit.sha
    missing = call(github_hub, "POST", "/repos/acme/app/check-runs", token=app_token, json={"head_sha": sha})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "name"
    no_conclusion = call(
        github_hub,
        "POST",
        "/repos/acme/app/check-runs",
        token=app_token,
        json={"name": "x", "head_sha": sha, "status": "completed"},
    )
    assert no_conclusion.status_code == 422 and no_conclusion.json()["errors"][0]["field"] == "conclusion"
    read_only_app = github_hub.add_token(kind="app", access="read")
    denied = call(
        github_hub, "POST", "/repos/acme/app/check-runs", token=read_only_app, json={"name": "x", "head_sha": sha}
    )
    assert (denied.status_code, denied.json()["message"]) == (403, "Resource not accessible by integration")
