"""The GitHub mirror with real worker processes: the mirror runs inside the workers (leader only),
results come through the ``github+redis://`` backend, failovers from the real monitor."""
from __future__ import annotations

import sys

import pytest

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import get_config
from sentinel_celery.plugin import create_app
from sentinel_celery.state.connection import get_redis
from tests.github_support import labels_of, sentinel_comments, shared_with_mirror

PY_OK = [sys.executable, "-c", "print('compiled ok')"]
PY_FAIL = [sys.executable, "-c", "import sys; print('2 tests failed'); sys.exit(3)"]


@pytest.fixture
def shared_config():
    shared = shared_with_mirror(flushIntervalMs=300)
    shared["github"]["assignees"] = {"wl": "octocat"}
    return shared


@pytest.fixture
def gh_client(gh_env):
    app = create_app("sentinel_celery")
    yield app
    app.close()


def worker_issue(repo, worker_id: str):
    found = [i for i in repo.get_issues(labels=["sentinel:worker"], state="all")
             if f"<!-- sentinel:worker:{worker_id} -->" in (i.body or "")]
    assert len(found) <= 1, "duplicate worker issues"
    return found[0] if found else None


def mirror_leader() -> str | None:
    cfg = get_config()
    return get_redis(cfg.redis_url).hget(f"{cfg.namespace}github:meta", "leader")


def test_worker_issue_lifecycle_start_death_return_and_stop(gh_env, workers, gh_repo):
    workers.start("wm", queues=["test"], concurrency=1, env=gh_env)
    wait_for(lambda: mirror_leader() == "wm", 30, message="wm to lead the mirror")
    wa = workers.start("wa", queues=["build"], concurrency=1, env={**gh_env, "WORKER_REGION": "eu-west"})

    def issue_with(state, *labels):
        issue = worker_issue(gh_repo, "wa")
        return issue if issue and issue.state == state and set(labels) <= {l.name for l in issue.labels} else None
    issue = wait_for(lambda: issue_with("open", "status:online", "queue:build", "region:eu-west"), 40,
                     message="wa's issue, open")
    assert "| region | eu-west |" in issue.body and "| queues |" in issue.body

    wa.kill9()
    issue = wait_for(lambda: issue_with("closed", "status:offline"), 60, message="wa's issue closed as dead")
    wait_for(lambda: any("Declared dead" in c.body for c in issue.get_comments()), 30, message="failover comment")
    dead = [c.body for c in issue.get_comments() if "Declared dead" in c.body][0]
    assert "Recovered:" in dead

    wa2 = workers.start("wa", queues=["build"], concurrency=1, env={**gh_env, "WORKER_REGION": "eu-west"})
    issue = wait_for(lambda: issue_with("open", "status:online"), 40, message="wa's issue reopened")
    wait_for(lambda: any("Back online" in c.body for c in issue.get_comments()), 30, message="back comment")

    assert wa2.stop(timeout=30) == 0
    issue = wait_for(lambda: issue_with("closed", "status:stopped"), 40, message="wa's issue closed as stopped")
    wait_for(lambda: any("**Stopped**" in c.body for c in issue.get_comments()), 30, message="stop comment")
    assert len([i for i in gh_repo.get_issues(labels=["sentinel:worker"], state="all")
                if "sentinel:worker:wa " in (i.body or "")]) == 1  # one issue through all of it
    comments = [c.body for c in issue.get_comments()]
    assert sum("Declared dead" in c for c in comments) == 1 and sum("Back online" in c for c in comments) == 1


def test_linked_jobs_on_a_real_worker_labels_comment_assignee_and_statuses(gh_env, workers, gh_client, gh_repo,
                                                                          github_hub):
    github_hub.add_collaborator("octocat")
    workers.start("wl", queues=["build", "test"], concurrency=1, env=gh_env)
    n = gh_repo.create_issue("PR 42: add feature", labels=["enhancement"]).number
    sha = gh_repo.get_commit("main").sha

    ok = gh_client.send_task("workers.build.run", kwargs={"argv": PY_OK, "github_issue": n, "sha": sha})
    assert ok.get(timeout=60)["exit_code"] == 0
    wait_for(lambda: labels_of(gh_repo, n) == {"enhancement", "sentinel:done"}, 40, message="done label")
    [comment] = sentinel_comments(gh_repo, n)
    assert "compiled ok" in comment.body and "| worker | wl |" in comment.body and "| queue | build |" in comment.body
    assert [a.login for a in gh_repo.get_issue(n).assignees] == ["octocat"]
    statuses = {s.context: s.state for s in gh_repo.get_commit(sha).get_combined_status().statuses}
    assert statuses == {"sentinel/build": "success"}

    bad = gh_client.send_task("workers.test.run", kwargs={"argv": PY_FAIL, "github_issue": n, "sha": sha})
    with pytest.raises(Exception, match="exit code 3"):
        bad.get(timeout=60)
    wait_for(lambda: labels_of(gh_repo, n) == {"enhancement", "sentinel:failed"}, 40, message="failed label")
    comments = sentinel_comments(gh_repo, n)
    assert len(comments) == 1 and comments[0].id == comment.id
    assert "2 tests failed" in comments[0].body and "JobFailed" in comments[0].body
    wait_for(lambda: {s.context: s.state for s in gh_repo.get_commit(sha).get_combined_status().statuses}
             == {"sentinel/build": "success", "sentinel/test": "failure"}, 40, message="test status")
    # a task without github_issue/sha costs GitHub nothing: no event, no request
    cfg = get_config()
    client = get_redis(cfg.redis_url)
    since = github_hub.log.last_seq
    plain = gh_client.send_task("workers.build.run", kwargs={"argv": PY_OK})
    plain.get(timeout=60)
    flushed = float(client.hget(f"{cfg.namespace}github:meta", "last_flush") or 0)
    wait_for(lambda: float(client.hget(f"{cfg.namespace}github:meta", "last_flush") or 0) > flushed + 0.5, 20,
             message="two more flushes")
    assert not client.hexists(f"{cfg.namespace}github:pending", f"task|{plain.id}")
    assert not client.hexists(f"{cfg.namespace}github:tasks", plain.id)
    touched = [r.path for r in github_hub.requests(since=since) if f"/issues/{n}" in r.path or "/statuses/" in r.path]
    assert touched == []


def test_linked_deploy_survives_a_worker_death_with_its_failover_in_the_comment(gh_env, workers, gh_client,
                                                                               gh_repo):
    workers.start("wm2", queues=["test"], concurrency=1, env=gh_env)
    wait_for(lambda: mirror_leader() == "wm2", 30, message="wm2 to lead the mirror (and the monitor)")
    procs = {w: workers.start(w, queues=["deploy"], concurrency=1, env=gh_env) for w in ("wd1", "wd2")}
    n = gh_repo.create_issue("Deploy 1.2 to staging").number
    sleeper = [sys.executable, "-c", "import time; time.sleep(4); print('deployed')"]
    result = gh_client.send_task("workers.deploy.run", kwargs={"argv": sleeper, "environment": "staging",
                                                               "github_issue": n})
    wait_for(lambda: {"sentinel:running", "sentinel:locked"} <= labels_of(gh_repo, n), 40,
             message="running and locked labels")
    body = wait_for(lambda: next((c.body for c in sentinel_comments(gh_repo, n) if "| worker | wd" in c.body), None),
                    20, message="the comment naming the worker")
    first = "wd1" if "| worker | wd1 |" in body else "wd2"
    other = "wd2" if first == "wd1" else "wd1"
    procs[first].kill9()
    assert result.get(timeout=90)["worker"] == other
    wait_for(lambda: labels_of(gh_repo, n) == {"sentinel:done"}, 40, message="done after the failover")
    [comment] = sentinel_comments(gh_repo, n)
    assert "Failover history" in comment.body and f"`{first}` was lost" in comment.body
    assert f"| worker | {other} |" in comment.body and "deployed" in comment.body
