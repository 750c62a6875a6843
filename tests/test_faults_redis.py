"""Redis faults with real worker processes and a private redis-server: an outage longer than the stale
threshold (append-only on: Redis comes back with its data), and a restart that comes back empty."""
from __future__ import annotations

import re
import time

import pytest
import redis

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import load_config, set_config
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.registry import get_registry
from tests import fault_jobs  # noqa: F401  (the client routes these by their task type)
from tests.conftest import dump_logs
from tests.faults_support import INCLUDE, tally
from tests.private_redis import PrivateRedis


@pytest.fixture
def shared_config():
    return {"distributed": {
        "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
        "heartbeat": {"intervalMs": 500, "staleThresholdMs": 3000, "recoveryEnabled": True, "pingTimeoutMs": 1000},
    }}


@pytest.fixture
def persistence():
    return True


@pytest.fixture
def private_redis(persistence):
    with PrivateRedis(appendonly=persistence) as server:
        yield server


@pytest.fixture
def rclient(private_redis):
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def runlog(tmp_path):
    return tmp_path / "runs.jsonl"


@pytest.fixture
def sentinel_env(monkeypatch, private_redis, namespace, config_dir, runlog, rclient):
    env = {"REDIS_URL": private_redis.url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_BROKER_PREFIX": namespace,
           "SENTINEL_CONFIG_DIR": str(config_dir), "FAULTS_RUNLOG": str(runlog)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WORKER_ID", raising=False)
    set_config(load_config())
    return env


def start_three(workers):
    procs = [workers.start(f"rf-{i}", queues=["build"], concurrency=2, include=INCLUDE, wait=False)
             for i in range(3)]
    for p in procs:
        workers.wait_ready(p)
    return procs


def test_redis_outage_longer_than_the_stale_threshold_declares_nobody_dead(workers, celery_client, private_redis,
                                                                           rclient, namespace, runlog):
    procs = start_three(workers)
    results = [celery_client.send_task("tests.faults.work", kwargs={"n": i, "seconds": 0.6}) for i in range(100)]
    wait_for(lambda: tally(runlog)["ends"] >= 10, 60, message="10 tasks to finish")
    private_redis.stop()
    down_at = time.monotonic()
    time.sleep(10)  # 3 x the stale threshold
    private_redis.start()
    print(f"Redis down {time.monotonic() - down_at:.1f}s with {100 - len(tally(runlog)['ended'])} tasks unfinished")
    wait_for(lambda: len(tally(runlog)["ended"]) == 100, 120, message="every task to finish")
    states = [r.get(timeout=30, propagate=False) and r.state for r in results]
    time.sleep(2)  # a few more monitor passes
    t = tally(runlog)
    logs = dump_logs(procs)
    assert not t["twice"], f"ran twice: {t['twice']}\n{logs}"
    assert states.count("SUCCESS") == 100, f"{[s for s in states if s != 'SUCCESS']}\n{logs}"
    assert read_events(rclient, namespace, 10) == [], logs
    assert {w.id: w.status for w in get_registry().workers()} == {f"rf-{i}": "online" for i in range(3)}
    assert not any(re.search(r"\) declared dead:|was declared dead", p.log()) for p in procs), logs
