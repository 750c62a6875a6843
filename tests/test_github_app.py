"""The GitHub mirror with GitHub App credentials (no token) against ``sentinel hub``.

PyGithub signs a JWT with the app's private key, buys an installation token from the hub and
refreshes it itself; with App credentials the mirror reports a linked task's commit as a check
run, never as a commit status.
"""
from __future__ import annotations

import time

import pytest

from sentinel_celery.config import load_config, set_config
from sentinel_celery.github.client import uses_app
from sentinel_celery.github.mirror import Mirror
from sentinel_celery.state import outbox
from tests.github_support import flush_until, shared_with_mirror

APP_ID, INSTALLATION_ID = 42, 7


@pytest.fixture
def shared_config():
    return shared_with_mirror()


def now_ms() -> int:
    return int(time.time() * 1000)


def test_mirror_with_app_credentials_writes_a_check_run_not_a_status(
    github_hub, github_app_key, gh_env, gh_repo, monkeypatch, tmp_path  # noqa: F811
):
    github_hub.add_app(APP_ID, github_app_key.public_pem, {INSTALLATION_ID: [github_hub.repo]})
    key_path = tmp_path / "app.private-key.pem"
    key_path.write_text(github_app_key.private_pem)
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("GITHUB_APP_ID", str(APP_ID))
    monkeypatch.setenv("GITHUB_PRIVATE_KEY_PATH", str(key_path))
    monkeypatch.setenv("GITHUB_INSTALLATION_ID", str(INSTALLATION_ID))
    cfg = load_config()
    set_config(cfg)
    assert not cfg.get("github")["token"] and uses_app(cfg)

    m = Mirror(cfg)
    try:
        sha = gh_repo.get_commit("main").sha
        link = {"sha": sha, "task_type": "test"}
        outbox.append("task", "a-1", {"state": "QUEUED", "task": "workers.test.run", "queue": "test",
                                      "attempts": 1, "at": now_ms(), **link})
        outbox.append("task", "a-1", {"state": "STARTED", "worker": "w1", "at": now_ms(), **link})
        flush_until(m, lambda: gh_repo.get_commit(sha).get_check_runs().totalCount == 1, message="check run")
        outbox.append("task", "a-1", {"state": "SUCCESS", "worker": "w1", "duration": 0.5, "exit_code": 0,
                                      "output_tail": "ok", "at": now_ms(), **link}, final=True)
        flush_until(m, lambda: [r.conclusion for r in gh_repo.get_commit(sha).get_check_runs()] == ["success"],
                    message="completed check run")
    finally:
        m.release()

    [run] = list(gh_repo.get_commit(sha).get_check_runs())
    assert (run.name, run.status, run.external_id) == ("sentinel/test", "completed", "a-1")
    assert (run.app.id, run.app.slug) == (APP_ID, "sentinel")
    assert list(gh_repo.get_commit(sha).get_statuses()) == []
    minted = github_hub.requests(method="POST", path_prefix=f"/app/installations/{INSTALLATION_ID}/access_tokens")
    assert [r.status for r in minted] == [201]  # one token, reused for the whole run
    writes = [r for r in github_hub.requests(path_prefix=f"/repos/{github_hub.repo}/check-runs")]
    assert writes and {r.token for r in writes} == {f"app-sentinel-installation-{INSTALLATION_ID}"}
