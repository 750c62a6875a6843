"""Fixtures and helpers shared by the GitHub mirror tests (imported by tests/test_github_*.py)."""
from __future__ import annotations

import copy
import time

import pytest

from sentinel_celery.config import load_config, set_config
from sentinel_celery.github.mirror import Mirror
from tests.conftest import FAST_SHARED

# Quick flushes and a relaxed write pace, so tests do not wait for GitHub's real pacing.
MIRROR_FAST = {"flushIntervalMs": 200, "maxWritesPerSecond": 200, "maxWritesPerMinute": 5000,
               "maxWritesPerHour": 50000, "dashboardMinIntervalMs": 0, "retryMaxMs": 1000,
               "reconcileIntervalMs": 0}


def shared_with_mirror(**mirror) -> dict:
    shared = copy.deepcopy(FAST_SHARED)
    shared["github"] = {"mirror": {**MIRROR_FAST, **mirror}}
    return shared


@pytest.fixture
def gh_env(github_hub, sentinel_env, monkeypatch):
    """The environment of a cluster mirrored to ``github_hub`` (also given to real workers)."""
    env = {"GITHUB_OWNER": github_hub.owner, "GITHUB_REPO": github_hub.repo.split("/", 1)[1],
           "GITHUB_TOKEN": github_hub.token, "GITHUB_API_URL": github_hub.base_url}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    set_config(load_config())
    return {**sentinel_env, **env}


@pytest.fixture
def gh_cfg(gh_env):
    from sentinel_celery.config import get_config
    return get_config()


@pytest.fixture
def gh_repo(github_hub):
    return github_hub.client().get_repo(github_hub.repo)


@pytest.fixture
def mirror(gh_cfg):
    m = Mirror(gh_cfg)
    yield m
    m.release()


def flush_until(mirror: Mirror, predicate, timeout: float = 30.0, message: str = "condition"):
    """Run flushes until ``predicate()`` is true (generous timeout: the machine is shared)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = mirror.step()
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {message}; last flush: {last}")


def issue_writes(hub, since: int = 0) -> list:
    return [r for r in hub.requests(since=since) if r.method in ("POST", "PATCH", "PUT", "DELETE")]


def labels_of(repo, number: int) -> set[str]:
    return {lbl.name for lbl in repo.get_issue(number).labels}


def sentinel_comments(repo, number: int) -> list:
    return [c for c in repo.get_issue(number).get_comments() if "<!-- sentinel:" in c.body]
