"""Text and shas from tasks that used to poison or misdirect the GitHub mirror, against ``sentinel hub``.

A lone surrogate in a task's output, one object that cannot be rendered among others that can,
and commit shas that are paths or URLs.
"""
from __future__ import annotations

import time

import pytest

from sentinel_celery.github.client import GitHubClient, Rejected, plain_path
from sentinel_celery.state import outbox
from tests.github_support import flush_until, sentinel_comments, shared_with_mirror


@pytest.fixture
def shared_config():
    return shared_with_mirror()


def now_ms() -> int:
    return int(time.time() * 1000)


def finished(task_id, issue, output, *, sha=None):
    link = {"github_issue": issue, **({"sha": sha} if sha else {})}
    outbox.append("task", task_id, {"state": "QUEUED", "task": "workers.build.run", "task_type": "build",
                                    "queue": "build", "at": now_ms(), **link})
    outbox.append("task", task_id, {"state": "SUCCESS", "worker": "w1", "duration": 0.5, "exit_code": 0,
                                    "output_tail": output, "at": now_ms(), **link}, final=True)


def test_a_lone_surrogate_in_task_output_renders_and_does_not_block_other_issues(mirror, gh_repo):
    poisoned = gh_repo.create_issue("Poisoned").number
    healthy = gh_repo.create_issue("Healthy").number
    finished("t-bad", poisoned, "before \udc80 after \ud83d")
    finished("t-good", healthy, "all good")
    flush_until(mirror, lambda: sentinel_comments(gh_repo, poisoned) and sentinel_comments(gh_repo, healthy),
                message="both issues to get their comment")
    [comment] = sentinel_comments(gh_repo, poisoned)
    assert "before \ufffd after \ufffd" in comment.body
    assert mirror.state.pending() == []


def test_an_object_that_cannot_be_rendered_is_given_up_after_three_flushes_and_logged_once(
        mirror, gh_repo, caplog):
    broken = gh_repo.create_issue("Broken").number
    healthy = gh_repo.create_issue("Healthy").number
    outbox.append("task", "t-broken", {"state": "SUCCESS", "worker": "w1", "duration": "n/a", "at": now_ms(),
                                       "github_issue": broken}, final=True)
    finished("t-ok", healthy, "fine")
    flush_until(mirror, lambda: sentinel_comments(gh_repo, healthy), message="the healthy issue's comment")
    flush_until(mirror, lambda: mirror.state.pending() == [], message="the backlog to drain")
    assert sentinel_comments(gh_repo, broken) == []
    rejected = mirror.redis.lrange(mirror.state.key("rejected"), 0, -1)
    assert any("t-broken" in r and "failed 3 times in Sentinel: ValueError" in r for r in rejected), rejected
    failures = [r for r in caplog.records if r.name == "sentinel_celery.github.mirror" and "Broken" not in r.message
                and r.levelname == "ERROR"]
    assert [r.message.split(";")[0] for r in failures] == [f"sentinel: mirroring issue #{broken} (1 task(s)) failed",
                                                           f"sentinel: giving up mirroring issue #{broken} (1 task(s)) "
                                                           f"after 3 failed flushes (ValueError: could not convert "
                                                           f"string to float: 'n/a')"], failures
    for _ in range(3):
        assert mirror.step()["rejected"] == 0


def test_a_sha_that_is_a_path_reaches_no_other_endpoint(mirror, gh_repo, github_hub):
    target = gh_repo.create_issue("Someone else's issue").number
    linked = gh_repo.create_issue("Linked").number
    finished("t-path", linked, "ok", sha=f"../../issues/{target}/comments")
    flush_until(mirror, lambda: sentinel_comments(gh_repo, linked), message="the linked issue's comment")
    flush_until(mirror, lambda: mirror.state.pending() == [], message="the backlog to drain")
    assert list(gh_repo.get_issue(target).get_comments()) == []
    paths = [r.path for r in github_hub.requests()]
    assert not [p for p in paths if ".." in p or "statuses" in p], paths
    [comment] = sentinel_comments(gh_repo, linked)
    assert "| commit | not a commit sha |" in comment.body and "issues/" not in comment.body


def test_a_sha_that_is_a_url_is_not_shown_as_a_link_and_short_shas_get_no_status(mirror, gh_repo, github_hub):
    full = gh_repo.get_commit("main").sha
    url_issue = gh_repo.create_issue("URL").number
    short_issue = gh_repo.create_issue("Short").number
    full_issue = gh_repo.create_issue("Full").number
    finished("t-url", url_issue, "ok", sha="https://evil.example/login")
    finished("t-short", short_issue, "ok", sha=full[:7].upper())
    finished("t-full", full_issue, "ok", sha=full)
    flush_until(mirror, lambda: all(sentinel_comments(gh_repo, n) for n in (url_issue, short_issue, full_issue)),
                message="the three comments")
    flush_until(mirror, lambda: mirror.state.pending() == [], message="the backlog to drain")
    [url_comment] = sentinel_comments(gh_repo, url_issue)
    assert "evil.example" not in url_comment.body and "| commit | not a commit sha |" in url_comment.body
    [short_comment] = sentinel_comments(gh_repo, short_issue)
    assert f"| commit | {full[:7]} |" in short_comment.body
    [full_comment] = sentinel_comments(gh_repo, full_issue)
    assert f"| commit | {full} |" in full_comment.body
    statuses = github_hub.requests(method="POST", path_prefix=f"/repos/{github_hub.repo}/statuses/")
    assert [r.path.rsplit("/", 1)[1] for r in statuses] == [full]


def test_the_client_refuses_a_path_that_is_not_plain(gh_cfg, github_hub):
    client = GitHubClient(gh_cfg)
    before = len(github_hub.requests())
    for path in ("statuses/../../issues/1/comments", "issues/1?state=all", "statuses/a%2F..", "statuses/https://x"):
        with pytest.raises(Rejected, match="refused, not a plain API path"):
            client.request("POST", path, body={})
    assert len(github_hub.requests()) == before
    assert client.request("GET", "issues").status == 200
    assert plain_path("issues/4/labels/sentinel%3Arun-build") and plain_path("/rate_limit")
