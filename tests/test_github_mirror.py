"""The GitHub mirror against ``sentinel hub`` (PyGithub over HTTP), driven through the outbox.

Linked task labels and one comment, commit statuses and check runs, a failover in a task's
history, 1,000 task lifecycles for a bounded number of requests, an outage with events arriving
during it, an exhausted rate limit, a restart with a lost cache, and a bad token.
"""
from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from sentinel_celery.cli import main as cli
from sentinel_celery.config import get_config
from sentinel_celery.github.mirror import Mirror, mirror_status
from sentinel_celery.state import outbox
from sentinel_celery.state.registry import RedisRegistry
from tests.github_support import flush_until, issue_writes, labels_of, sentinel_comments, shared_with_mirror


@pytest.fixture
def shared_config():
    return shared_with_mirror()


def now_ms() -> int:
    return int(time.time() * 1000)


def lifecycle(task_id: str, *, issue=None, sha=None, task_type="build", worker="w1", ok=True, output="ok"):
    """The events a linked task's client, worker and result backend append."""
    link = {k: v for k, v in (("github_issue", issue), ("sha", sha)) if v is not None}
    outbox.append("task", task_id, {"state": "QUEUED", "task": f"workers.{task_type}.run", "task_type": task_type,
                                    "queue": task_type, "attempts": 1, "at": now_ms(), **link})
    outbox.append("task", task_id, {"state": "STARTED", "worker": worker, "at": now_ms(), **link})
    final = {"state": "SUCCESS", "duration": 0.5, "exit_code": 0, "output_tail": output} if ok else \
        {"state": "FAILURE", "error": f"exit code 3; output tail:\n{output}", "error_type": "JobFailed", "exit_code": 3}
    outbox.append("task", task_id, {**final, "worker": worker, "at": now_ms(), **link}, final=True)


def test_linked_task_labels_and_one_comment_through_success_failure_and_failover(mirror, gh_repo, github_hub):
    issue = gh_repo.create_issue("Release 1.2", labels=["release"])
    n = issue.number
    outbox.append("task", "t-1", {"state": "QUEUED", "github_issue": n, "task": "workers.build.run",
                                  "task_type": "build", "queue": "build", "at": now_ms()})
    flush_until(mirror, lambda: "sentinel:queued" in labels_of(gh_repo, n), message="queued label")
    assert labels_of(gh_repo, n) == {"release", "sentinel:queued"}  # the user's label is kept

    outbox.append("task", "t-1", {"state": "STARTED", "worker": "w1", "github_issue": n, "at": now_ms()})
    outbox.append("task", "t-1", {"locked": "deploy:prod", "lease_token": 7})
    flush_until(mirror, lambda: {"sentinel:running", "sentinel:locked"} <= labels_of(gh_repo, n), message="running")
    assert "sentinel:queued" not in labels_of(gh_repo, n)

    # the worker dies; failover gives the task back and another worker runs it
    outbox.append("failover", "w1#1", {"id": "w1#1", "worker": "w1", "incarnation": 1, "detected_at": now_ms(),
                                       "tasks_recovered": [{"id": "t-1", "name": "workers.build.run",
                                                            "was_running": True}], "leases_released": ["deploy:prod"]},
                  final=True)
    outbox.append("task", "t-1", {"state": "STARTED", "worker": "w2", "github_issue": n, "at": now_ms(),
                                  "locked": None})
    outbox.append("task", "t-1", {"state": "SUCCESS", "worker": "w2", "duration": 2.5, "output_tail": "built",
                                  "github_issue": n, "at": now_ms(), "locked": None}, final=True)
    flush_until(mirror, lambda: "sentinel:done" in labels_of(gh_repo, n), message="done label")
    assert labels_of(gh_repo, n) == {"release", "sentinel:done"}
    [comment] = sentinel_comments(gh_repo, n)
    assert "success" in comment.body and "w2" in comment.body and "built" in comment.body
    assert "Failover history" in comment.body and "`w1` was lost" in comment.body and "w2" in comment.body

    lifecycle("t-2", issue=n, ok=False, output="compile error")
    flush_until(mirror, lambda: "sentinel:failed" in labels_of(gh_repo, n), message="failed label")
    assert labels_of(gh_repo, n) == {"release", "sentinel:failed"}
    comments = sentinel_comments(gh_repo, n)
    assert len(comments) == 1 and comments[0].id == comment.id  # one comment, edited in place
    body = comments[0].body
    assert "compile error" in body and "JobFailed" in body and "Recent tasks on this issue" in body
    assert len(github_hub.requests(method="POST", path_prefix=f"/repos/{github_hub.repo}/issues/{n}/comments")) == 1


def run_events(task_id, issue, *, name="workers.build.run", queued=None, started=None, finished=None, ok=True,
               worker="w1"):
    """The events of one linked task, at the given times (ms); only the phases given."""
    link = {"github_issue": issue}
    task_type = name.split(".")[1]
    if queued is not None:
        outbox.append("task", task_id, {"state": "QUEUED", "task": name, "task_type": task_type, "queue": task_type,
                                        "attempts": 1, "at": queued, **link})
    if started is not None:
        outbox.append("task", task_id, {"state": "STARTED", "worker": worker, "at": started, **link})
    if finished is not None:
        final = {"state": "SUCCESS", "duration": 0.5, "output_tail": "ok"} if ok else \
            {"state": "FAILURE", "error": "exit code 3", "error_type": "JobFailed", "exit_code": 3}
        outbox.append("task", task_id, {**final, "worker": worker, "at": finished, **link}, final=True)


def test_issue_label_and_headline_summarise_every_linked_task(mirror, gh_repo):
    n = gh_repo.create_issue("Release 2.0").number
    t0 = now_ms()

    def headline():
        [comment] = sentinel_comments(gh_repo, n)
        return next(line for line in comment.body.splitlines() if line.startswith("### "))

    # two builds linked to the issue run side by side; one fails, the other succeeds 32 ms later
    run_events("b-1", n, queued=t0, started=t0 + 10, finished=t0 + 500, ok=False)
    run_events("b-2", n, queued=t0 + 1, started=t0 + 11, finished=t0 + 532, worker="w2")
    flush_until(mirror, lambda: labels_of(gh_repo, n) & {"sentinel:failed", "sentinel:done"}, message="a label")
    assert labels_of(gh_repo, n) == {"sentinel:failed"}
    assert headline() == "### ❌ Sentinel: 1 of 2 linked tasks failed"

    # a test starts meanwhile: a failure still stands (as GitHub combines statuses: failure first)
    run_events("t-1", n, name="workers.test.run", queued=t0 + 600, started=t0 + 610)
    flush_until(mirror, lambda: "1 of 3" in headline(), message="three tasks")
    assert labels_of(gh_repo, n) == {"sentinel:failed"}

    # the failed build is run again (a new task, queued after it had finished): running while any runs
    run_events("b-3", n, queued=t0 + 700, started=t0 + 710)
    flush_until(mirror, lambda: labels_of(gh_repo, n) == {"sentinel:running"}, message="running")
    assert headline() == "### ⏳ Sentinel: 2 of 2 linked tasks running"

    run_events("b-3", n, finished=t0 + 900)
    flush_until(mirror, lambda: "1 of 2" in headline(), message="one still running")
    assert labels_of(gh_repo, n) == {"sentinel:running"}  # not done while the test runs

    run_events("t-1", n, name="workers.test.run", finished=t0 + 950)
    flush_until(mirror, lambda: labels_of(gh_repo, n) == {"sentinel:done"}, message="done")
    assert headline() == "### ✅ Sentinel: all 2 linked tasks succeeded"
    assert len(sentinel_comments(gh_repo, n)) == 1


def test_commit_statuses_per_task_type(mirror, gh_repo):
    sha = gh_repo.get_commit("main").sha
    outbox.append("task", "b-1", {"state": "STARTED", "sha": sha, "task_type": "build", "worker": "w1",
                                  "at": now_ms()})
    flush_until(mirror, lambda: [s.state for s in gh_repo.get_commit(sha).get_statuses()] == ["pending"],
                message="pending status")
    outbox.append("task", "b-1", {"state": "SUCCESS", "sha": sha, "task_type": "build", "worker": "w1",
                                  "duration": 1.0, "at": now_ms()}, final=True)
    lifecycle("t-1", sha=sha, task_type="test", ok=False, output="1 failed")
    outbox.append("task", "d-1", {"state": "REVOKED", "sha": sha, "task_type": "deploy", "at": now_ms()}, final=True)

    def latest():
        return {s.context: s.state for s in gh_repo.get_commit(sha).get_combined_status().statuses}
    flush_until(mirror, lambda: len(latest()) == 3, message="three contexts")
    assert latest() == {"sentinel/build": "success", "sentinel/test": "failure", "sentinel/deploy": "error"}
    statuses = list(gh_repo.get_commit(sha).get_statuses())
    assert len(statuses) == 4  # pending + 3 outcomes: the test task's queued/started folded into its failure
    build = [s for s in statuses if s.context == "sentinel/build" and s.state == "success"][0]
    assert "succeeded on w1" in build.description
    mirror.step()
    assert len(list(gh_repo.get_commit(sha).get_statuses())) == 4  # nothing new: nothing is written again


def test_check_runs_with_an_app_installation_token(github_hub, gh_env, monkeypatch, gh_repo):
    from sentinel_celery.config import load_config, set_config
    monkeypatch.setenv("GITHUB_TOKEN", github_hub.add_token(kind="app", app_slug="sentinel"))
    cfg = load_config(overrides={"github.mirror.checkRuns": "always"})
    set_config(cfg)
    m = Mirror(cfg)
    try:
        sha = gh_repo.get_commit("main").sha
        outbox.append("task", "c-1", {"state": "STARTED", "sha": sha, "task_type": "test", "worker": "w1",
                                      "at": now_ms()})
        flush_until(m, lambda: gh_repo.get_commit(sha).get_check_runs().totalCount == 1, message="check run")
        outbox.append("task", "c-1", {"state": "SUCCESS", "sha": sha, "task_type": "test", "at": now_ms()},
                      final=True)
        flush_until(m, lambda: [r.conclusion for r in gh_repo.get_commit(sha).get_check_runs()] == ["success"],
                    message="completed check run")
        [run] = list(gh_repo.get_commit(sha).get_check_runs())
        assert run.name == "sentinel/test" and run.status == "completed" and run.external_id == "c-1"
    finally:
        m.release()


def test_first_label_write_is_one_post_and_an_earlier_runs_leftover_label_is_removed(mirror, gh_repo, github_hub):
    fresh = gh_repo.create_issue("fresh", labels=["release"]).number
    stale = gh_repo.create_issue("stale", labels=["release", "sentinel:running"]).number  # our cache was lost
    mirror.step()
    since = github_hub.log.last_seq
    lifecycle("t-fresh", issue=fresh)
    lifecycle("t-stale", issue=stale)
    flush_until(mirror, lambda: mirror_status(get_config())["outbox_depth"] == 0, message="an empty outbox")
    calls = [(r.method, r.path.split("/issues/", 1)[-1]) for r in github_hub.requests(since=since)
             if f"/issues/{fresh}" in r.path or f"/issues/{stale}" in r.path]
    assert calls == [("POST", f"{fresh}/comments"), ("POST", f"{fresh}/labels"),  # no read before the labels
                     ("POST", f"{stale}/comments"), ("POST", f"{stale}/labels"),
                     ("GET", f"{stale}"), ("PATCH", f"{stale}")], calls  # the leftover needed a replace
    assert labels_of(gh_repo, fresh) == {"release", "sentinel:done"}
    assert labels_of(gh_repo, stale) == {"release", "sentinel:done"}


@pytest.mark.github_hub(limits={"writes_per_minute": 10000, "writes_per_hour": 100000})  # the test's pace is fast
def test_thousand_task_lifecycles_cost_a_bounded_number_of_requests(mirror, gh_repo, github_hub):
    issues = [gh_repo.create_issue(f"PR {i}").number for i in range(5)]
    sha = gh_repo.get_commit("main").sha
    mirror.step()  # the dashboard and the first look-ups, before counting
    since = github_hub.log.last_seq
    flushes = 10
    for batch in range(flushes):  # 1,000 tasks, every one linked to an issue, a fifth to the commit
        for i in range(100):
            n = batch * 100 + i
            lifecycle(f"task-{n}", issue=issues[n % 5], sha=sha if n % 5 == 0 else None,
                      task_type=("build", "test")[n % 2], worker=f"w{n % 3}")
        mirror.step()
    flush_until(mirror, lambda: mirror_status(get_config())["outbox_depth"] == 0, message="an empty outbox")
    used = github_hub.requests(since=since)
    writes = issue_writes(github_hub, since)
    # O(objects x flushes), not O(tasks): 5 issues (GET + PATCH labels, PATCH comment) and 2 commit contexts
    # per flush, plus the dashboard
    assert len(used) <= flushes * (5 * 3 + 2 + 1) + 10, [(r.method, r.path) for r in used]
    assert len(writes) <= flushes * (5 * 2 + 2 + 1) + 5
    for n in issues:
        assert labels_of(gh_repo, n) == {"sentinel:done"}
        assert len(sentinel_comments(gh_repo, n)) == 1
    st = mirror_status(get_config())
    assert st["folded"] >= 3000 and st["dropped"] == 0


def test_outage_events_during_it_are_not_lost_and_the_mirror_converges(mirror, gh_repo, github_hub, rclient):
    numbers = [gh_repo.create_issue(f"job {i}").number for i in range(3)]
    lifecycle("before", issue=numbers[0])
    flush_until(mirror, lambda: labels_of(gh_repo, numbers[0]) == {"sentinel:done"}, message="first task")

    github_hub.set_faults(outage_seconds=6)
    outage_ends = time.time() + 6
    since = github_hub.log.last_seq
    lifecycle("during-1", issue=numbers[1])
    mirror.step()
    lifecycle("during-2", issue=numbers[2], ok=False)
    outbox.append("task", "during-1", {"state": "SUCCESS", "github_issue": numbers[1], "output_tail": "late line",
                                       "at": now_ms()}, final=True)
    while time.time() < outage_ends - 0.5:
        res = mirror.step()
        time.sleep(0.1)
    assert res["error"] and "503" in res["error"] or "no answer" in (res["error"] or "")
    st = mirror_status(get_config())
    assert st["outbox_depth"] >= 2 and st["stream_depth"] == 0  # folded into pending, not lost, not sent
    assert all(r.status == 503 for r in github_hub.requests(since=since))
    failed_tries = len(github_hub.requests(since=since))
    assert failed_tries < 20  # back-off: the mirror does not hammer a GitHub that is down

    flush_until(mirror, lambda: mirror_status(get_config())["outbox_depth"] == 0, timeout=40,
                message="convergence after the outage")
    assert labels_of(gh_repo, numbers[1]) == {"sentinel:done"}
    assert labels_of(gh_repo, numbers[2]) == {"sentinel:failed"}
    assert "late line" in sentinel_comments(gh_repo, numbers[1])[0].body


def test_label_read_waits_for_the_write_slot_so_a_persons_label_cannot_slip_in_between(mirror, gh_repo, github_hub):
    n = gh_repo.create_issue("job", labels=["release"]).number
    outbox.append("task", "l-1", {"state": "QUEUED", "task": "workers.build.run", "task_type": "build",
                                  "github_issue": n, "at": now_ms()})
    flush_until(mirror, lambda: "sentinel:queued" in labels_of(gh_repo, n), message="queued")
    mirror.budget.pace.per_second = 1.0  # GitHub's pace: a second between writes
    since = github_hub.log.last_seq
    outbox.append("task", "l-1", {"state": "SUCCESS", "github_issue": n, "at": now_ms()}, final=True)
    flush_until(mirror, lambda: "sentinel:done" in labels_of(gh_repo, n), message="done")
    log = [r for r in github_hub.requests(since=since) if r.path.startswith(f"/repos/{github_hub.repo}/issues")]
    issue = f"/repos/{github_hub.repo}/issues/{n}"
    (read,) = [i for i, r in enumerate(log[1:-1], 1)  # the mirror's read-and-replace of the labels
               if (r.method, r.path, log[i + 1].method, log[i + 1].path) == ("GET", issue, "PATCH", issue)]
    comment_edit = log[read - 1]
    assert comment_edit.method == "PATCH" and "/comments/" in comment_edit.path
    read_after = log[read].ts - comment_edit.ts
    assert read_after >= 0.9, read_after  # the read waited for the write slot, not the replace after it
    assert labels_of(gh_repo, n) == {"release", "sentinel:done"}


def test_after_an_outage_the_mirror_resumes_without_sitting_out_its_back_off(mirror, gh_repo, github_hub):
    n = gh_repo.create_issue("job").number
    mirror.step()
    github_hub.set_faults(outage_seconds=2)
    outage_ends = time.time() + 2
    lifecycle("t-1", issue=n)
    assert mirror.step()["error"]
    mirror.next_try = time.time() + 3600  # as after many failed tries: a back-off far longer than the test
    while time.time() < outage_ends:
        assert mirror.step()["error"]
        time.sleep(0.1)
    since = github_hub.log.last_seq
    flush_until(mirror, lambda: labels_of(gh_repo, n) == {"sentinel:done"}, timeout=15, message="resumed")
    log = github_hub.requests(since=since)  # the test's own reads of the issue are in it too
    probes = [i for i, r in enumerate(log) if r.path == "/rate_limit" and r.status == 200]
    writes = [i for i, r in enumerate(log) if r.method != "GET"]
    assert probes and writes and probes[0] < writes[0]  # the probe found GitHub back, then the writes went


@pytest.mark.github_hub(limits={"window": 8})
def test_exhausted_rate_limit_no_request_until_reset(mirror, gh_repo, github_hub):
    numbers = [gh_repo.create_issue(f"job {i}").number for i in range(3)]
    for i, n in enumerate(numbers):
        lifecycle(f"r-{i}", issue=n)
    github_hub.set_faults(exhaust_rate_limit=5)
    since = github_hub.log.last_seq
    res = mirror.step()
    limited = github_hub.requests(since=since)
    assert [r.status for r in limited] == [403], "one refused request, then the mirror waits"
    assert "rate limit" in res["error"]
    reset = mirror.budget.reset
    assert reset >= limited[0].ts + 3
    assert mirror_status(get_config())["blocked_until"] == reset
    while time.time() < reset - 0.5:
        mirror.step()
        time.sleep(0.05)
    assert github_hub.requests(since=limited[0].seq) == []  # nothing sent before x-ratelimit-reset
    flush_until(mirror, lambda: all(labels_of(gh_repo, n) == {"sentinel:done"} for n in numbers), timeout=30,
                message="convergence after the reset")


@pytest.mark.github_hub(limits={"core": 14, "window": 5})
def test_low_remaining_slows_down_instead_of_running_out(mirror, gh_repo, github_hub):
    numbers = [gh_repo.create_issue(f"job {i}").number for i in range(6)]  # 6 of the 14 requests
    for i, n in enumerate(numbers):
        lifecycle(f"r-{i}", issue=n)
    reader = github_hub.client(github_hub.add_token(access="read", label="reader")).get_repo(github_hub.repo)
    flush_until(mirror, lambda: mirror_status(get_config())["outbox_depth"] == 0, timeout=60,
                message="convergence under a tight primary limit")
    assert all(labels_of(reader, n) == {"sentinel:done"} for n in numbers)
    assert not [r for r in github_hub.requests() if r.status == 403]  # spread over the window, never refused
    assert len([r for r in github_hub.requests() if r.token != "reader"]) > 14  # it did need a second window


def test_restart_with_a_lost_cache_does_not_duplicate(gh_cfg, gh_repo, github_hub, rclient, namespace):
    registry = RedisRegistry(rclient, namespace, 1500)
    registry.register("w-r", "inst-1", {"hostname": "h1", "queues": ["build"], "capacity": {"maxConcurrentTasks": 2},
                                        "metadata": {"region": "eu"}, "concurrency": 2, "started": now_ms()})
    n = gh_repo.create_issue("job").number
    lifecycle("x-1", issue=n)
    first = Mirror(gh_cfg)
    flush_until(first, lambda: len(list(gh_repo.get_issues(labels=["sentinel:worker"]))) == 1 and
                sentinel_comments(gh_repo, n), message="worker issue and task comment")
    first.release()
    rclient.delete(f"{namespace}github:objects", f"{namespace}github:tasks")  # Redis lost the mirror's cache
    registry.set_state("w-r", "draining")
    lifecycle("x-2", issue=n, ok=False)
    second = Mirror(gh_cfg)
    try:
        flush_until(second, lambda: "sentinel:failed" in labels_of(gh_repo, n), message="second task mirrored")
        flush_until(second, lambda: "status:draining" in labels_of(gh_repo, 1) or any(
            "status:draining" in {l.name for l in i.labels} for i in gh_repo.get_issues(labels=["sentinel:worker"])),
            message="draining label")
    finally:
        second.release()
    assert len(list(gh_repo.get_issues(labels=["sentinel:worker"], state="all"))) == 1
    assert len(list(gh_repo.get_issues(labels=["sentinel:dashboard"], state="all"))) == 1
    assert len(sentinel_comments(gh_repo, n)) == 1


def test_bad_token_is_a_clear_message_not_a_traceback(gh_env, monkeypatch, caplog):
    from sentinel_celery.config import load_config, set_config
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrongwrongwrong")
    cfg = load_config()
    set_config(cfg)
    m = Mirror(cfg)
    try:
        outbox.append("task", "t", {"state": "QUEUED", "github_issue": 1, "at": now_ms()})
        res = m.step()
    finally:
        m.release()
    assert "rejected the credentials" in res["error"]
    assert "ghp_wrongwrongwrong" not in caplog.text and "Traceback" not in caplog.text
    assert mirror_status(cfg)["outbox_depth"] == 1  # kept for when the token is fixed
    out = CliRunner().invoke(cli, ["github", "test-connection"])
    assert out.exit_code == 1 and "rejected the credentials" in out.output
    assert "ghp_wrongwrongwrong" not in out.output
    out = CliRunner().invoke(cli, ["config", "check"])
    assert "ghp_wrongwrongwrong" not in out.output


def test_cli_status_and_sync(gh_env, gh_repo):
    n = gh_repo.create_issue("job").number
    lifecycle("s-1", issue=n)
    out = CliRunner().invoke(cli, ["github", "status", "--json"])
    assert out.exit_code == 0 and '"outbox_depth": 3' in out.output
    out = CliRunner().invoke(cli, ["github", "sync"])
    assert out.exit_code == 0, out.output
    assert "outbox 0" in out.output
    assert labels_of(gh_repo, n) == {"sentinel:done"}
    out = CliRunner().invoke(cli, ["github", "test-connection"])
    assert out.exit_code == 0 and "acme/app is reachable" in out.output


def test_dashboard_is_edited_only_when_its_content_changes(mirror, gh_repo, github_hub, rclient, namespace):
    flush_until(mirror, lambda: list(gh_repo.get_issues(labels=["sentinel:dashboard"])), message="dashboard")
    [dash] = gh_repo.get_issues(labels=["sentinel:dashboard"])
    since = github_hub.log.last_seq
    for _ in range(5):
        mirror.step()
    assert github_hub.requests(since=since) == []  # nothing changed: not a single request
    from sentinel_celery.state.leases import try_acquire
    held = try_acquire("deploy:prod", 60, worker="w-dash", renew=False)
    RedisRegistry(rclient, namespace, 1500).register("w-dash", "i-1", {
        "hostname": "h", "queues": ["deploy"], "capacity": {"maxConcurrentTasks": 4}, "concurrency": 4,
        "metadata": {"region": "us"}, "started": now_ms()})
    flush_until(mirror, lambda: "deploy:prod" in gh_repo.get_issue(dash.number).body, message="lease shown")
    body = gh_repo.get_issue(dash.number).body
    assert "| w-dash | online | us | deploy | 4 |" in body
    assert f"| deploy:prod | w-dash | {held.token} |" in body
    edits = [r for r in github_hub.requests(since=since) if r.method == "PATCH"]
    assert len(edits) == 1
    held.release()


def test_alert_transitions_from_alerts_py_become_one_issue(mirror, gh_repo, rclient, namespace):
    alert = {"kind": "alert", "alert": "queue_backlog:build", "severity": "warning",
             "title": "[sentinel alert] queue_backlog:build: 150 waiting", "body": "**WARNING** — 150 waiting @ops",
             "labels": ["sentinel:alert"], "at": time.time()}
    outbox.append({**alert, "op": "open"})
    flush_until(mirror, lambda: list(gh_repo.get_issues(labels=["sentinel:alert"])), message="alert issue")
    [issue] = gh_repo.get_issues(labels=["sentinel:alert"])
    assert "150 waiting" in issue.title and "@ops" not in issue.body
    assert rclient.hget(f"{namespace}alerts:issues", "queue_backlog:build") == str(issue.number)
    outbox.append({**alert, "op": "close", "body": "resolved"})
    flush_until(mirror, lambda: gh_repo.get_issue(issue.number).state == "closed", message="alert closed")
    outbox.append({**alert, "op": "open"})
    flush_until(mirror, lambda: gh_repo.get_issue(issue.number).state == "open", message="alert reopened")
    assert len(list(gh_repo.get_issues(labels=["sentinel:alert"], state="all"))) == 1
