"""Issues, comments, labels and assignees through PyGithub."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from github import GithubException, UnknownObjectException

from .helpers import call


@pytest.fixture
def repo(github_hub):
    return github_hub.client().get_repo(github_hub.repo)


def test_create_get_update_issue(github_hub, repo):
    github_hub.add_collaborator("alice")
    issue = repo.create_issue("Worker lost", body="lease expired", labels=["bug", "sentinel"], assignees=["alice"])
    assert issue.number == 1 and issue.state == "open"
    assert sorted(label.name for label in issue.labels) == ["bug", "sentinel"]
    assert repo.get_label("sentinel").color == "ededed"  # created on the fly, as GitHub does
    assert [a.login for a in issue.assignees] == ["alice"]
    assert issue.user.login == "acme"

    issue.edit(title="Worker lost (fenced)", body="new body", state="closed", labels=["enhancement"], assignees=[])
    again = repo.get_issue(1)
    assert again.title == "Worker lost (fenced)" and again.body == "new body"
    assert again.state == "closed" and again.state_reason == "completed"
    assert again.closed_at is not None and again.closed_by.login == "acme"
    assert [label.name for label in again.labels] == ["enhancement"]
    assert again.assignees == []
    again.edit(state="open")
    assert repo.get_issue(1).state_reason == "reopened" and repo.get_issue(1).closed_at is None


def test_issue_numbers_are_sequential_and_missing_issue_is_404(repo):
    numbers = [repo.create_issue(f"issue {i}").number for i in range(3)]
    assert numbers == [1, 2, 3]
    with pytest.raises(UnknownObjectException):
        repo.get_issue(99)


def test_assigning_a_user_without_access_is_422_on_create(repo):
    with pytest.raises(GithubException) as info:
        repo.create_issue("x", assignees=["stranger"])
    assert info.value.status == 422
    assert info.value.data["errors"][0] == {
        "resource": "Issue",
        "code": "invalid",
        "field": "assignees",
        "value": "stranger",
    }


def test_a_milestone_that_does_not_exist_is_422(github_hub, repo):
    issue = repo.create_issue("x")
    patch = call(github_hub, "PATCH", "/repos/acme/app/issues/1", json={"title": "y", "milestone": 3})
    assert patch.status_code == 422
    assert patch.json()["errors"] == [{"resource": "Issue", "code": "invalid", "field": "milestone", "value": 3}]
    assert repo.get_issue(issue.number).title == "x"  # nothing of the refused edit applied
    create = call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "z", "milestone": 1})
    assert create.status_code == 422 and create.json()["errors"][0]["field"] == "milestone"
    cleared = call(github_hub, "PATCH", "/repos/acme/app/issues/1", json={"milestone": None})
    assert cleared.status_code == 200 and cleared.json()["milestone"] is None


def test_assignees_endpoints_ignore_users_without_access(github_hub, repo):
    github_hub.add_collaborator("alice")
    github_hub.add_collaborator("bob")
    issue = repo.create_issue("assign me")
    issue.add_to_assignees("alice", "stranger", "bob")
    assert sorted(a.login for a in repo.get_issue(issue.number).assignees) == ["alice", "bob"]
    issue.remove_from_assignees("alice")
    assert [a.login for a in repo.get_issue(issue.number).assignees] == ["bob"]
    assert repo.has_in_assignees("bob") and not repo.has_in_assignees("stranger")
    assert sorted(u.login for u in repo.get_assignees()) == ["acme", "alice", "bob"]


def test_list_filters_state_labels_assignee(github_hub, repo):
    github_hub.add_collaborator("alice")
    a = repo.create_issue("a", labels=["bug"])
    b = repo.create_issue("b", labels=["bug", "ui"], assignees=["alice"])
    c = repo.create_issue("c")
    c.edit(state="closed")
    assert [i.number for i in repo.get_issues()] == [b.number, a.number]  # open, newest first
    assert [i.number for i in repo.get_issues(state="closed")] == [c.number]
    assert [i.number for i in repo.get_issues(state="all", direction="asc")] == [a.number, b.number, c.number]
    assert [i.number for i in repo.get_issues(labels=["bug", "ui"])] == [b.number]
    assert [i.number for i in repo.get_issues(labels=[repo.get_label("bug")])] == [b.number, a.number]
    assert [i.number for i in repo.get_issues(assignee="alice")] == [b.number]
    assert [i.number for i in repo.get_issues(assignee="none")] == [a.number]
    assert [i.number for i in repo.get_issues(state="all", creator="acme")] == [c.number, b.number, a.number]
    assert call(github_hub, "GET", "/repos/acme/app/issues?state=bogus").status_code == 422


def test_list_since_and_sort_by_updated(github_hub, repo):
    first = repo.create_issue("first")
    second = repo.create_issue("second")
    time.sleep(1.05)  # timestamps have whole seconds, as on GitHub
    cutoff = datetime.now(timezone.utc).replace(microsecond=0)
    first.create_comment("bump")  # a comment updates the issue's updated_at
    assert [i.number for i in repo.get_issues(since=cutoff)] == [first.number]
    assert [i.number for i in repo.get_issues(sort="updated")] == [first.number, second.number]
    assert [i.number for i in repo.get_issues(sort="comments", direction="desc")][0] == first.number
    assert list(repo.get_issues(since=cutoff + timedelta(hours=1))) == []


def test_pagination_link_header_and_paginated_list(github_hub, repo):
    for n in range(7):
        call(github_hub, "POST", "/repos/acme/app/issues", json={"title": f"issue {n}"})
    page1 = call(github_hub, "GET", "/repos/acme/app/issues?per_page=3&state=open")
    link = page1.headers["Link"]
    assert f'<{github_hub.base_url}/repos/acme/app/issues?state=open&per_page=3&page=2>; rel="next"' in link
    assert 'page=3>; rel="last"' in link
    assert len(page1.json()) == 3
    page3 = call(github_hub, "GET", "/repos/acme/app/issues?per_page=3&page=3")
    assert (
        len(page3.json()) == 1 and 'rel="prev"' in page3.headers["Link"] and 'rel="next"' not in page3.headers["Link"]
    )

    gh = github_hub.client(per_page=2)
    issues = gh.get_repo(github_hub.repo).get_issues()
    assert [i.title for i in issues] == [f"issue {n}" for n in reversed(range(7))]
    assert issues.totalCount == 7
    pages = [
        r for r in github_hub.requests(path_prefix="/repos/acme/app/issues", method="GET") if "per_page=2" in r.query
    ]
    assert len(pages) >= 4  # PyGithub walked every page by following Link


def test_comments_crud(repo):
    issue = repo.create_issue("with comments")
    first = issue.create_comment("first **comment**")
    second = issue.create_comment("second")
    assert first.html_url.endswith(f"/acme/app/issues/{issue.number}#issuecomment-{first.id}")
    assert [c.body for c in issue.get_comments()] == ["first **comment**", "second"]
    assert repo.get_issue(issue.number).comments == 2
    fetched = issue.get_comment(first.id)
    assert fetched.user.login == "acme"
    fetched.edit("edited")
    assert issue.get_comment(first.id).body == "edited"
    second.delete()
    assert [c.body for c in issue.get_comments()] == ["edited"]
    with pytest.raises(UnknownObjectException):
        issue.get_comment(second.id)
    assert [c.body for c in repo.get_issues_comments()] == ["edited"]


def test_empty_comment_is_422(github_hub, repo):
    issue = repo.create_issue("x")
    response = call(github_hub, "POST", f"/repos/acme/app/issues/{issue.number}/comments", json={})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


def test_repository_labels_crud(repo):
    label = repo.create_label("flaky", "f29513", "Fails sometimes")
    assert (label.name, label.color, label.description) == ("flaky", "f29513", "Fails sometimes")
    with pytest.raises(GithubException) as info:
        repo.create_label("flaky", "000000")
    assert info.value.status == 422 and info.value.data["errors"][0]["code"] == "already_exists"
    label.edit("flaky test", "00ff00", "renamed")
    assert repo.get_label("flaky test").color == "00ff00"
    with pytest.raises(UnknownObjectException):
        repo.get_label("flaky")
    repo.get_label("flaky test").delete()
    names = [label.name for label in repo.get_labels()]
    assert "flaky test" not in names and "bug" in names  # GitHub's default labels exist


def test_label_with_slash_and_space_in_name(repo):
    repo.create_label("area/api docs", "123abc")
    issue = repo.create_issue("x", labels=["area/api docs"])
    issue.remove_from_labels("area/api docs")
    assert repo.get_issue(issue.number).labels == []
    assert repo.get_label("area/api docs").color == "123abc"


def test_issue_labels_add_set_remove(github_hub, repo):
    issue = repo.create_issue("labels")
    issue.add_to_labels("bug", "triage")
    assert sorted(label.name for label in issue.get_labels()) == ["bug", "triage"]
    issue.set_labels("question")
    assert [label.name for label in issue.get_labels()] == ["question"]
    issue.add_to_labels("bug")
    issue.remove_from_labels("question")
    assert [label.name for label in issue.get_labels()] == ["bug"]
    missing = call(github_hub, "DELETE", f"/repos/acme/app/issues/{issue.number}/labels/wontfix")
    assert missing.status_code == 404 and missing.json()["message"] == "Label does not exist"
    issue.delete_labels()
    assert list(issue.get_labels()) == []
    added = call(github_hub, "POST", f"/repos/acme/app/issues/{issue.number}/labels", json={"labels": ["a", "b"]})
    assert [label["name"] for label in added.json()] == ["a", "b"]


def test_collaborators_list_check_add(github_hub, repo):
    assert [u.login for u in repo.get_collaborators()] == ["acme"]
    assert repo.has_in_collaborators("acme") and not repo.has_in_collaborators("carol")
    repo.add_to_collaborators("carol", permission="push")
    assert repo.has_in_collaborators("carol")
    assert repo.get_collaborator_permission("carol") == "write"
    issue = repo.create_issue("now assignable", assignees=["carol"])
    assert [a.login for a in issue.assignees] == ["carol"]
    writer = github_hub.add_token(login="dev", access="write")
    with pytest.raises(GithubException) as info:
        github_hub.client(writer).get_repo(github_hub.repo).add_to_collaborators("dave")
    assert info.value.status == 403
