"""GitHub → jobs: the hub's real webhook deliveries and poll mode start jobs on real workers, and every
bad input (forged, replayed, oversized, malformed, a reader, an unknown template or parameter, a flood)
queues nothing, with one clear log line."""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import socket
import subprocess
import sys
import uuid

import pytest
import requests
from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import ConfigError, load_config
from sentinel_celery.intake.duty import IntakeDuty, IntakeService
from sentinel_celery.intake.intake import Inbox
from sentinel_celery.plugin import create_app
from tests.github_support import labels_of, sentinel_comments, shared_with_mirror

SECRET = "s3cret-for-tests"
PY = sys.executable
INTAKE = {
    "pollIntervalMs": 300,
    "maxCommandsPerIssuePerMinute": 3,
    "templates": {
        "build": {"type": "build", "argv": [PY, "-c", "print('built it')"]},
        "test": {"type": "test", "argv": [PY, "-c", "print('tested it')"]},
        "deploy": {"type": "deploy", "argv": [PY, "-c", "import sys; print('deployed to', sys.argv[1])", "{env}"],
                   "environment": "{env}", "params": {"env": {"allowed": ["staging", "production"]}}},
    },
    "rules": [
        {"on": "push", "branch": "main", "chain": ["build", "test"]},
        {"on": "issue_comment", "command": "/deploy", "template": "deploy", "params": ["env"]},
        {"on": "issue_comment", "command": "/run"},
        {"on": "label", "prefix": "sentinel:run-"},
    ],
}


def intake_shared(**intake) -> dict:
    shared = shared_with_mirror(flushIntervalMs=200)
    shared["github"]["webhookSecret"] = SECRET
    shared["github"]["intake"] = {**copy.deepcopy(INTAKE), **intake}
    return shared


@pytest.fixture
def shared_config():
    return intake_shared()


@pytest.fixture
def app(gh_env):
    a = create_app("sentinel_celery")
    yield a
    a.close()


@pytest.fixture
def service(app, gh_cfg, github_hub):
    """``sentinel intake serve`` in this process, with the hub delivering its webhooks to it."""
    s = IntakeService(app, gh_cfg, mode="webhook", port=0).start()
    github_hub.add_webhook(s.url, SECRET)
    yield s
    s.stop()


def stats(rclient, namespace) -> dict:
    return {k: int(v) for k, v in rclient.hgetall(f"{namespace}intake:stats").items()}


def queued_messages(rclient, namespace) -> int:
    return sum(rclient.llen(f"{namespace}{q}") for q in ("build", "test", "deploy"))


def polls(hub, since: int) -> list:
    return [r for r in hub.requests(since=since) if r.method == "GET"
            and r.path in ("/repos/acme/app/issues/comments", "/repos/acme/app/issues/events")]


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, *, event="issue_comment", delivery=None, signature: str | None = "sign"):
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/test"}
    if signature == "sign":
        headers["X-Hub-Signature-256"] = signed(body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return requests.post(url, data=body, headers=headers, timeout=10)


def settle(service, rclient, namespace, timeout=15):
    wait_for(lambda: rclient.llen(f"{namespace}intake:inbox") == 0, timeout, message="the inbox to drain")


# -- end to end, real workers ---------------------------------------------------------------------
def test_deploy_comment_push_and_run_label_start_jobs_on_a_worker(service, workers, gh_env, github_hub, gh_repo,
                                                                  rclient, namespace):
    workers.start("wi", queues=["build", "test", "deploy"], concurrency=2, env=gh_env)
    issue = gh_repo.create_issue("Deploy tracker")
    issue.create_comment("/deploy staging")
    wait_for(lambda: "sentinel:done" in labels_of(gh_repo, issue.number), 60, message="the deploy to finish")
    (status,) = sentinel_comments(gh_repo, issue.number)
    assert "deployed to staging" in status.body and "deploy" in status.body
    assert stats(rclient, namespace)["queued"] == 1

    head = gh_repo.create_file("src/app.py", "change", "print('v2')\n", branch="main")["commit"].sha

    def statuses():
        found = {s.context: s.state for s in gh_repo.get_commit(head).get_combined_status().statuses}
        return found if found.get("sentinel/build") == "success" and found.get("sentinel/test") == "success" \
            else None
    wait_for(statuses, 60, message="build and test statuses on the pushed sha")

    labelled = gh_repo.create_issue("Nightly build")
    gh_repo.get_issue(labelled.number).add_to_labels("sentinel:run-build")
    wait_for(lambda: "sentinel:done" in labels_of(gh_repo, labelled.number), 60, message="the labelled build")
    assert "sentinel:run-build" not in labels_of(gh_repo, labelled.number)
    github_hub.wait_for_deliveries()
    delivered = [d for d in github_hub.deliveries() if d.done]  # the mirror may be writing still
    assert len(delivered) > 10 and all(d.status == "OK" for d in delivered)


def test_poll_mode_in_a_worker_duty_starts_jobs_and_idle_polls_cost_no_rate_limit(
        workers, gh_env, github_hub, gh_repo, rclient, namespace, config_dir):
    shared = intake_shared(mode="poll", inWorkers=True)  # minPermission write: labels are checked by their actor
    shared["github"]["mirror"].update(dashboard=False, workerIssues=False)  # only the deploy's issue changes
    (config_dir / "shared.json").write_text(json.dumps(shared))
    workers.start("wp", queues=["build", "test", "deploy"], concurrency=1, env=gh_env)
    wait_for(lambda: rclient.hget(f"{namespace}lease:sentinel:intake", "worker") == "wp", 30,
             message="wp to run the intake")
    wait_for(lambda: any(r.status == 304 for r in polls(github_hub, 0)), 30, message="a conditional poll answered 304")
    issue = gh_repo.create_issue("Deploy via polling")
    issue.create_comment("/deploy production")
    wait_for(lambda: "sentinel:done" in labels_of(gh_repo, issue.number), 60, message="the polled deploy")
    assert "deployed to production" in sentinel_comments(gh_repo, issue.number)[0].body
    assert stats(rclient, namespace)["queued"] == 1
    labelled = gh_repo.create_issue("Polled label")
    labelled.add_to_labels("sentinel:run-test")
    wait_for(lambda: "sentinel:done" in labels_of(gh_repo, labelled.number), 60, message="the polled run label")
    assert "sentinel:run-test" not in labels_of(gh_repo, labelled.number)

    # once the deploy is done and mirrored, polling an idle repository is nothing but 304s (no rate limit)
    before = github_hub.requests()[-1].seq

    def idle():
        recent = polls(github_hub, before)
        by_path = {path: [r.status for r in recent if r.path == path] for path in {r.path for r in recent}}
        return len(by_path) == 2 and all(len(s) >= 3 and s[-3:] == [304, 304, 304] for s in by_path.values())
    wait_for(idle, 30, message="idle polls answered 304")


# -- bad input: nothing queued, one clear line ------------------------------------------------------
def test_forged_unsigned_oversized_and_malformed_deliveries_are_refused(service, rclient, namespace, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.intake")
    body = json.dumps({"action": "created", "comment": {"body": "/deploy staging"}, "issue": {"number": 1},
                       "sender": {"login": "acme", "type": "User"}}).encode()
    assert post(service.url, body, signature=None).status_code == 401
    assert post(service.url, body, signature=signed(body, "wrong-secret")).status_code == 401
    assert post(service.url, body + b" ", signature=signed(body)).status_code == 401
    assert post(service.url, b"{not json", signature="sign").status_code == 400
    assert post(service.url, b"[1, 2]", signature="sign").status_code == 400

    host, port = service.server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: issue_comment\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 26214401\r\n\r\n{")
        answer = raw.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413")

    assert queued_messages(rclient, namespace) == 0 and rclient.llen(f"{namespace}intake:inbox") == 0
    assert stats(rclient, namespace) == {}
    text = caplog.text
    assert "no X-Hub-Signature-256" in text and "wrong X-Hub-Signature-256" in text
    assert "not a JSON object" in text and "26214401 bytes" in text


def test_a_redelivery_or_replayed_delivery_id_queues_nothing_new(service, github_hub, gh_repo, rclient, namespace):
    issue = gh_repo.create_issue("replays")
    issue.create_comment("/deploy staging")
    assert github_hub.wait_for_deliveries()
    settle(service, rclient, namespace)
    wait_for(lambda: stats(rclient, namespace).get("queued") == 1, 15, message="one deploy queued")
    comment_delivery = next(d for d in github_hub.deliveries() if d.event == "issue_comment")
    github_hub.redeliver(comment_delivery.id)
    assert github_hub.wait_for_deliveries()
    last = github_hub.deliveries()[-1]
    assert last.redelivery and last.status_code == 200
    body = json.loads(github_hub.webhooks.get(comment_delivery.id).body)
    replay = post(service.url, json.dumps(body).encode(), delivery=comment_delivery.guid)
    assert replay.status_code == 200 and replay.json()["message"] == "Already received"
    settle(service, rclient, namespace)
    assert stats(rclient, namespace)["queued"] == 1
    assert rclient.llen(f"{namespace}deploy") == 1


def test_unknown_events_get_204_and_are_logged_once(service, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.intake")
    for _ in range(3):
        assert post(service.url, b'{"action": "started"}', event="star").status_code == 204
    assert caplog.text.count("ignoring star events") == 1
    assert post(service.url, b'{"zen": "hi"}', event="ping").status_code == 200


def test_a_reader_gets_one_short_reply_and_nothing_runs(service, github_hub, gh_repo, rclient, namespace, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.intake")
    # on GitHub a reader may comment; the hub's token access is per token, so: a token that can write
    # comments, for a user who is a read (pull) collaborator of the repository
    reader = github_hub.add_token(login="reader", access="write")
    github_hub.add_collaborator("reader", "pull")
    issue = gh_repo.create_issue("readers cannot deploy")
    as_reader = github_hub.client(reader).get_repo(github_hub.repo).get_issue(issue.number)
    as_reader.create_comment("/deploy production")
    as_reader.create_comment("/deploy production")
    assert github_hub.wait_for_deliveries()
    settle(service, rclient, namespace)
    wait_for(lambda: stats(rclient, namespace).get("refused") == 2, 15, message="both refused")
    replies = [c for c in gh_repo.get_issue(issue.number).get_comments() if "sentinel:intake" in c.body]
    assert len(replies) == 1
    assert "needs write permission" in replies[0].body and "@reader" not in replies[0].body  # no mention ping
    assert queued_messages(rclient, namespace) == 0
    assert "@reader has read permission, write is needed" in caplog.text


def test_unknown_template_parameter_and_label_are_refused(service, github_hub, gh_repo, rclient, namespace, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.intake")
    issue = gh_repo.create_issue("bad commands")
    issue.create_comment("/deploy mars")
    issue.create_comment("/run nosuch")
    issue.create_comment("/run deploy env=staging colour=red")
    gh_repo.create_issue("bad label").add_to_labels("sentinel:run-nosuch")  # another issue: below the rate limit
    assert github_hub.wait_for_deliveries()
    settle(service, rclient, namespace)
    wait_for(lambda: stats(rclient, namespace).get("refused") == 4, 15, message="four refusals")
    assert queued_messages(rclient, namespace) == 0
    text = caplog.text
    assert "parameter env must be one of staging, production" in text
    assert "no template 'nosuch' in github.intake.templates" in text
    assert "template deploy has no parameter colour" in text
    assert "label sentinel:run-nosuch" in text


def test_a_flood_of_commands_on_one_issue_is_rate_limited_and_bots_are_ignored(
        service, github_hub, gh_repo, rclient, namespace, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.intake")
    issue = gh_repo.create_issue("flood")
    for _ in range(6):
        issue.create_comment("/deploy staging")
    bot = github_hub.add_token(kind="app", login="sentinel[bot]", access="write")
    github_hub.client(bot).get_repo(github_hub.repo).get_issue(issue.number).create_comment("/deploy staging")
    assert github_hub.wait_for_deliveries()
    settle(service, rclient, namespace)
    wait_for(lambda: stats(rclient, namespace).get("refused") == 3, 15, message="three refused")
    counts = stats(rclient, namespace)
    assert counts["queued"] == 3
    assert rclient.llen(f"{namespace}deploy") == 3
    assert caplog.text.count("too many commands on this issue") == 3
    replies = [c for c in gh_repo.get_issue(issue.number).get_comments() if "sentinel:intake" in c.body]
    assert len(replies) == 1

    shown = json.loads(CliRunner().invoke(main, ["intake", "status", "--json"]).output)
    assert shown["counts"]["queued"] == 3 and shown["counts"]["refused"] == 3
    assert sum(1 for r in shown["recent"] if r["result"] == "queued" and len(r["task_ids"]) == 1) == 3


def test_events_of_another_repository_start_nothing(service, github_hub, rclient, namespace, caplog):
    caplog.set_level(logging.INFO, logger="sentinel.intake")
    github_hub.create_repo("acme/other")
    other = github_hub.client().get_repo("acme/other")
    other.create_issue("not ours").create_comment("/deploy staging")
    assert github_hub.wait_for_deliveries()
    settle(service, rclient, namespace)
    wait_for(lambda: stats(rclient, namespace).get("ignored") == 2, 15, message="both events ignored")
    assert queued_messages(rclient, namespace) == 0
    assert "for acme/other: this intake serves acme/app" in caplog.text


def test_a_delivery_left_half_handled_by_a_dead_intake_is_handled_once_by_the_next(app, gh_cfg, rclient, namespace):
    body = json.dumps({"action": "created", "comment": {"body": "/deploy staging"}, "issue": {"number": 7},
                       "sender": {"login": "acme", "type": "User"}}).encode()
    inbox = Inbox(rclient, namespace)
    inbox.put("issue_comment", "d-crashed", body)
    inbox.put("issue_comment", "d-crashed", body)  # the same delivery twice: handled once all the same
    rclient.lmove(inbox.key, inbox.processing, "RIGHT", "LEFT")  # taken by an intake that then died
    service = IntakeService(app, gh_cfg, mode="webhook", port=0).start()
    try:
        wait_for(lambda: stats(rclient, namespace).get("queued") == 1 and not rclient.llen(inbox.processing)
                 and not rclient.llen(inbox.key), 15, message="the recovered delivery to be handled")
        assert rclient.llen(f"{namespace}deploy") == 1
    finally:
        service.stop()


def test_an_intake_duty_that_cannot_listen_gives_its_lease_back(app, gh_env, rclient, namespace):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = load_config(overrides={"github.intake.port": taken.getsockname()[1]})
        duty = IntakeDuty(app, cfg, "w-busy-port")
        with pytest.raises(OSError):
            duty.step()
    assert duty.service is None and duty.lease is None
    assert not rclient.exists(f"{namespace}lease:sentinel:intake")  # another worker may take it at once


# -- configuration and command ------------------------------------------------------------------------
@pytest.mark.parametrize("intake, message", [
    ({"templates": {"deploy": {"type": "ship", "argv": ["x"]}}},
     "'github.intake.templates.deploy.type' must be one of distributed.taskTypes"),
    ({"templates": {"deploy": {"type": "deploy", "argv": "./deploy.sh staging"}}},
     "'github.intake.templates.deploy.argv' must be a non-empty list of strings"),
    ({"templates": {"deploy": {"type": "deploy", "argv": ["./d.sh", "{env}"]}}},
     "'github.intake.templates.deploy' uses {env}, which is not one of its params"),
    ({"templates": {"d": {"type": "deploy", "argv": ["x"], "params": {"env": {}}}}},
     "'github.intake.templates.d.params.env' needs 'allowed' or 'pattern'"),
    ({"rules": [{"on": "push", "branch": "main", "chain": ["nosuch"]}]},
     "'github.intake.rules[0].chain' names 'nosuch', which is not in github.intake.templates"),
    ({"rules": [{"on": "issue_comment", "command": "deploy"}]},
     "'github.intake.rules[0].command' must be one word starting with '/'"),
    ({"rules": [{"on": "pull_request"}]}, "'github.intake.rules[0]' must be an object with 'on'"),
    ({"minPermission": "owner"}, "'github.intake.minPermission' is \"owner\"; valid values"),
])
def test_bad_intake_configuration_names_the_key_and_the_file(tmp_path, intake, message):
    (tmp_path / "shared.json").write_text(json.dumps({"github": {"intake": intake}}))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    line = next(e for e in info.value.errors if message in e)
    assert line.startswith(str(tmp_path / "shared.json"))


def test_sentinel_intake_serve_receives_on_its_port_and_refuses_without_a_secret(gh_env, config_dir):
    proc = subprocess.Popen([PY, "-m", "sentinel_celery.cli", "intake", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**gh_env})
    try:
        line = proc.stdout.readline()
        assert line.startswith("sentinel intake: receiving GitHub webhooks at http://127.0.0.1:"), line
        url = line.split()[-1]
        assert post(url, b"{}", signature=None).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    shared = json.loads((config_dir / "shared.json").read_text())
    shared["github"]["webhookSecret"] = ""
    (config_dir / "shared.json").write_text(json.dumps(shared))
    done = subprocess.run([PY, "-m", "sentinel_celery.cli", "intake", "serve", "--port", "0"], capture_output=True,
                          text=True, env={**gh_env}, timeout=60)
    assert done.returncode == 1
    assert "github.webhookSecret (GITHUB_WEBHOOK_SECRET) must be set" in done.stderr
