"""GitHub's size limits (bodies 65,536 characters, titles 256), and the mirror's cut-offs staying under them."""

from __future__ import annotations

import pytest
from github import GithubException

from sentinel_celery.github import render, tasks, workers
from sentinel_celery.hub.limits import MAX_BODY, MAX_TITLE

from .helpers import call

TOO_LONG_BODY = "body is too long (maximum is 65536 characters)"
# what grows most when neutralised: HTML and '&' are escaped, mentions and references get a joiner
HOSTILE = "<&>@team #1 `x` |" * 10_000


def error_of(response) -> dict:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"] == "Validation Failed"
    (error,) = body["errors"]
    return error


def test_issue_body_over_65536_characters_is_422(github_hub):
    error = error_of(call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "t", "body": "x" * 65_537}))
    assert error == {"resource": "Issue", "code": "custom", "field": "body", "message": TOO_LONG_BODY}
    issue = call(github_hub, "POST", "/repos/acme/app/issues", json={"title": "t", "body": "x" * 65_536})
    assert issue.status_code == 201
    edit = call(github_hub, "PATCH", "/repos/acme/app/issues/1", json={"body": "é" * 65_537})  # characters, not bytes
    assert error_of(edit)["message"] == TOO_LONG_BODY


def test_issue_title_over_256_characters_is_422(github_hub):
    repo = github_hub.client().get_repo(github_hub.repo)
    with pytest.raises(GithubException) as info:
        repo.create_issue("t" * 257)
    assert info.value.status == 422
    assert info.value.data["errors"][0]["field"] == "title"
    assert info.value.data["errors"][0]["message"] == "title is too long (maximum is 256 characters)"
    issue = repo.create_issue("t" * 256)
    with pytest.raises(GithubException) as info:
        issue.edit(title="u" * 257)
    assert info.value.status == 422
    assert repo.get_issue(issue.number).title == "t" * 256


def test_comment_body_over_65536_characters_is_422(github_hub):
    issue = github_hub.client().get_repo(github_hub.repo).create_issue("t")
    with pytest.raises(GithubException) as info:
        issue.create_comment("c" * 65_537)
    assert info.value.status == 422
    assert info.value.data["errors"][0]["message"] == TOO_LONG_BODY
    comment = issue.create_comment("c" * 65_536)
    edit = call(github_hub, "PATCH", f"/repos/acme/app/issues/comments/{comment.id}", json={"body": "d" * 65_537})
    assert error_of(edit) == {"resource": "IssueComment", "code": "custom", "field": "body", "message": TOO_LONG_BODY}


def huge_task_state() -> dict:
    return {
        "state": "FAILURE",
        "task_type": HOSTILE,
        "task": HOSTILE,
        "worker": HOSTILE,
        "queue": HOSTILE,
        "attempts": 3,
        "duration": 12.5,
        "locked": HOSTILE,
        "lease_token": HOSTILE,
        "sha": HOSTILE,
        "at": 1_700_000_000_000,
        "exit_code": 1,
        "error_type": HOSTILE,
        "error": HOSTILE * 20,
        "output_tail": HOSTILE * 20,
        "failovers": [{"at": 1_700_000_000_000, "worker": HOSTILE, "to": HOSTILE}] * 50,
    }


def test_the_mirrors_bodies_and_titles_fit_githubs_limits(github_hub):
    """Huge hostile task output rendered by the mirror's own functions still posts (201) to the hub."""
    state = huge_task_state()
    history = [{"id": f"{n:040d}", "type": HOSTILE, "state": "FAILURE", "worker": HOSTILE, "at": n} for n in range(10)]
    comment = tasks.comment_body(7, history, state, history[0]["id"])
    worker_body = workers.body(HOSTILE, "online", {"host": HOSTILE, "types": [HOSTILE] * 100}, None, 0, 5)
    failover = workers.failover_comment({"id": HOSTILE, "by": HOSTILE, "reason": HOSTILE,
                                         "tasks_recovered": [{"id": HOSTILE, "name": HOSTILE}] * 100,
                                         "leases_released": [HOSTILE] * 100})
    alert_text = "<" * 100_000 + HOSTILE  # render.markdown escapes each '<' as four characters
    alert_body = render.marker("alert", HOSTILE) + "\n" + render.markdown(alert_text)  # as dashboard's alerts do
    titles = [f"Worker {render.plain(HOSTILE, 100)}", render.plain(HOSTILE, 200)]  # as workers and alerts do
    bodies = [comment, worker_body, failover, alert_body]
    assert max(len(body) for body in bodies) <= MAX_BODY
    assert max(len(title) for title in titles) <= MAX_TITLE

    repo = github_hub.client().get_repo(github_hub.repo)
    for title, body in zip(titles * 2, bodies, strict=True):
        issue = repo.create_issue(title, body=body)
        assert repo.get_issue(issue.number).body == body
        assert issue.create_comment(body).body == body
