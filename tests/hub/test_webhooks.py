"""The hub delivers webhooks as GitHub does: signed POSTs with GitHub's headers and payload shapes, retried, listed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from github import GithubException

from sentinel_celery.hub import Hub

from .helpers import call

SECRET = "It's a Secret to Everybody"


class Receiver:
    """A webhook receiver on a loopback port: records each POST; answers ``statuses`` in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[dict] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received.append({"headers": dict(self.headers), "body": body})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def events(self, name: str) -> list[dict]:
        with self.lock:
            return [
                {**json.loads(r["body"]), "_headers": r["headers"]}
                for r in self.received
                if r["headers"]["X-GitHub-Event"] == name
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooked(github_hub_factory, receiver):
    hub = github_hub_factory(repos=["acme/app"])
    hub.add_webhook(receiver.url, SECRET)
    return hub


def test_an_issue_comment_is_delivered_signed_with_githubs_headers_and_shape(hooked, receiver):
    repo = hooked.client().get_repo("acme/app")
    issue = repo.create_issue("deploy tracker")
    comment = issue.create_comment("/deploy staging")
    assert hooked.wait_for_deliveries()

    (delivered,) = receiver.events("issue_comment")
    headers = delivered.pop("_headers")
    raw = next(r["body"] for r in receiver.received if r["headers"]["X-GitHub-Event"] == "issue_comment")
    expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == expected
    assert headers["X-Hub-Signature"].startswith("sha1=")
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert headers["Content-Type"] == "application/json"
    assert len(headers["X-GitHub-Delivery"]) == 36
    assert headers["X-GitHub-Hook-Installation-Target-Type"] == "repository"
    assert delivered["action"] == "created"
    assert delivered["comment"]["id"] == comment.id and delivered["comment"]["body"] == "/deploy staging"
    assert delivered["issue"]["number"] == issue.number
    assert delivered["repository"]["full_name"] == "acme/app" and "permissions" not in delivered["repository"]
    assert delivered["sender"]["login"] == "acme" and delivered["sender"]["type"] == "User"
    (opened,) = receiver.events("issues")
    assert opened["action"] == "opened" and opened["issue"]["title"] == "deploy tracker"


def test_labels_on_issues_and_in_the_repository_raise_issues_and_label_events(hooked, receiver):
    repo = hooked.client().get_repo("acme/app")
    repo.create_label("sentinel:run-build", "ededed")
    issue = repo.create_issue("run it", labels=["bug"])
    issue.add_to_labels("sentinel:run-build")
    issue.remove_from_labels("bug")
    assert hooked.wait_for_deliveries()

    assert [e["action"] for e in receiver.events("label")] == ["created"]
    assert receiver.events("label")[0]["label"]["name"] == "sentinel:run-build"
    actions = [(e["action"], (e.get("label") or {}).get("name")) for e in receiver.events("issues")]
    assert actions == [
        ("opened", None),
        ("labeled", "bug"),
        ("labeled", "sentinel:run-build"),
        ("unlabeled", "bug"),
    ]


def test_a_push_through_the_contents_and_git_refs_apis_raises_push(hooked, receiver):
    repo = hooked.client().get_repo("acme/app")
    old_head = repo.get_branch("main").commit.sha
    result = repo.create_file("src/app.py", "add app", "print('hi')\n", branch="main")
    new_head = result["commit"].sha
    repo.create_git_ref("refs/heads/feature", new_head)
    assert hooked.wait_for_deliveries()

    main_push, feature_push = receiver.events("push")
    assert main_push["ref"] == "refs/heads/main"
    assert (main_push["before"], main_push["after"]) == (old_head, new_head)
    assert [c["id"] for c in main_push["commits"]] == [new_head]
    assert main_push["head_commit"]["added"] == ["src", "src/app.py"] or main_push["head_commit"]["added"] == [
        "src/app.py"
    ]
    assert main_push["pusher"]["name"] == "acme" and not main_push["created"] and not main_push["forced"]
    assert isinstance(main_push["repository"]["pushed_at"], int)
    assert feature_push["ref"] == "refs/heads/feature" and feature_push["created"]
    assert feature_push["before"] == "0" * 40


def test_a_failed_delivery_is_retried_with_the_same_guid_and_listed_on_the_admin_endpoint(github_hub_factory):
    receiver = Receiver(statuses=[500, 503])
    try:
        hub = github_hub_factory(repos=["acme/app"])
        hub.webhooks.retry_delays = (0.05, 0.05, 0.05)
        hub.add_webhook(receiver.url, SECRET, events=["issues"])
        hub.client().get_repo("acme/app").create_issue("retry me")
        assert hub.wait_for_deliveries()
        guids = {r["headers"]["X-GitHub-Delivery"] for r in receiver.received}
        assert len(receiver.received) == 3 and len(guids) == 1

        listed = call(hub, "GET", "/_hub/webhooks/deliveries").json()
        assert [(d["event"], d["action"], d["status"], d["attempts"]) for d in listed] == [
            ("issues", "opened", "OK", 3)
        ]
        one = call(hub, "GET", f"/_hub/webhooks/deliveries/{listed[0]['id']}").json()
        assert one["request"]["headers"]["X-GitHub-Event"] == "issues"
        assert one["request"]["payload"]["issue"]["title"] == "retry me"
        assert SECRET not in json.dumps(call(hub, "GET", "/_hub/webhooks").json())

        again = call(hub, "POST", f"/_hub/webhooks/deliveries/{listed[0]['id']}/attempts")
        assert again.status_code == 202 and again.json()["redelivery"] is True
        assert hub.wait_for_deliveries()
        assert receiver.received[-1]["headers"]["X-GitHub-Delivery"] in guids
        assert receiver.received[-1]["body"] == receiver.received[0]["body"]
    finally:
        receiver.close()


def test_a_receiver_that_never_answers_well_leaves_a_failed_delivery(github_hub_factory):
    hub = github_hub_factory(repos=["acme/app"])
    hub.webhooks.retry_delays = (0.05,)
    hub.add_webhook("http://127.0.0.1:9/closed", None, events=["issues"])  # the discard port: refused
    hub.client().get_repo("acme/app").create_issue("nobody listens")
    assert hub.wait_for_deliveries()
    (delivery,) = hub.deliveries()
    assert delivery.attempts == 2 and delivery.status.startswith("failed")
    assert call(hub, "GET", "/_hub/webhooks/deliveries", params={"status": "failed"}).json()[0]["id"] == delivery.id


def test_hooks_are_per_repository_and_per_event_and_unsigned_without_a_secret(github_hub_factory, receiver):
    hub = github_hub_factory(repos=["acme/app", "acme/other"])
    hub.add_webhook(receiver.url, repos=["acme/other"], events=["issue_comment"])
    gh = hub.client()
    gh.get_repo("acme/app").create_issue("not for the hook").create_comment("ignored")
    gh.get_repo("acme/other").create_issue("for the hook").create_comment("delivered")
    assert hub.wait_for_deliveries()
    assert [r["headers"]["X-GitHub-Event"] for r in receiver.received] == ["issue_comment"]
    assert json.loads(receiver.received[0]["body"])["comment"]["body"] == "delivered"
    assert "X-Hub-Signature-256" not in receiver.received[0]["headers"]


def test_a_failed_request_delivers_nothing(hooked, receiver):
    repo = hooked.client().get_repo("acme/app")
    issue = repo.create_issue("x")
    hooked.set_faults(fail_next=1, fail_mode="before")
    with pytest.raises(GithubException):
        issue.create_comment("lost")
    assert hooked.wait_for_deliveries()
    assert receiver.events("issue_comment") == []


def test_the_tokens_file_sets_hooks_per_repository_and_sentinel_hub_takes_webhook_options(tmp_path, receiver):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [{"token": "ghp_" + "a" * 36, "login": "acme", "access": "admin"}],
                "webhooks": [{"url": receiver.url, "secret": SECRET, "repos": ["acme/app"], "events": ["push"]}],
            }
        )
    )
    with Hub(repos=["acme/app"], tokens_file=str(tokens)) as hub:
        (hook,) = hub.webhooks.hooks()
        assert (hook.repos, hook.events, hook.secret) == (("acme/app",), ("push",), SECRET)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"webhooks": [{"url": receiver.url, "events": ["pull_request"]}]}))
    with pytest.raises(ValueError, match=r"webhooks\[0\]: 'events'"):
        Hub(tokens_file=str(bad))

    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_celery.cli", "hub", "--port", "0", "--repo", "acme/app",
         "--webhook", receiver.url, "--webhook-secret", SECRET],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        token_line = proc.stdout.readline()
        base = first.split()[2]
        token = token_line.split()[1]
        deadline = time.monotonic() + 15
        while "webhook:" not in proc.stdout.readline() and time.monotonic() < deadline:
            pass
        content = base64.b64encode(b"x").decode()
        answer = requests.put(
            f"{base}/repos/acme/app/contents/x.txt",
            json={"message": "x", "content": content},
            headers={"Authorization": f"token {token}"},
            timeout=10,
        )
        assert answer.status_code == 201
        deadline = time.monotonic() + 10
        while not receiver.events("push") and time.monotonic() < deadline:
            time.sleep(0.02)
        (push,) = receiver.events("push")
        assert push["_headers"]["X-Hub-Signature-256"].startswith("sha256=")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
