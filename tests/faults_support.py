"""What the fault tests share: the run log their tasks write (tests/fault_jobs.py) and its tallies, and fixtures
that put a test's cluster on a private redis-server (``persistence``: append-only or not). A test module moves its
cluster there by importing the two fixtures of tests/private_cluster.py.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import redis

from sentinel_celery.config import load_config, set_config
from tests.private_redis import PrivateRedis

INCLUDE = ("tests.jobs", "tests.fault_jobs")


def read_runlog(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tally(path: Path) -> dict:
    """Starts and ends per task id, and the ids that ran (ended) more than once."""
    entries = read_runlog(path)
    starts = Counter(e["id"] for e in entries if e["phase"] == "start")
    ends = Counter(e["id"] for e in entries if e["phase"] == "end")
    return {"starts": sum(starts.values()), "ends": sum(ends.values()),
            "ended": set(ends), "twice": {i for i, n in ends.items() if n > 1}, "entries": entries}


@pytest.fixture
def persistence():
    """Whether the private Redis keeps an append-only file (override per test with parametrize)."""
    return True


@pytest.fixture
def private_redis(persistence):
    with PrivateRedis(appendonly=persistence) as server:
        yield server


@pytest.fixture
def runlog(tmp_path):
    return tmp_path / "runs.jsonl"


@pytest.fixture
def private_rclient(private_redis):
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def private_sentinel_env(monkeypatch, private_redis, namespace, config_dir, runlog, private_rclient):
    """The cluster's environment, on the private Redis; its tasks write ``runlog``."""
    env = {"REDIS_URL": private_redis.url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_BROKER_PREFIX": namespace,
           "SENTINEL_CONFIG_DIR": str(config_dir), "FAULTS_RUNLOG": str(runlog)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WORKER_ID", raising=False)
    set_config(load_config())
    return env

