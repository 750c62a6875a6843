"""Shared fixtures: a real Redis (the configured one, else a private redis-server), an isolated
namespace per test, a Celery client app, and real worker processes."""
from __future__ import annotations

import json
import os
import uuid

import pytest
import redis

import tests.jobs  # noqa: F401  (the client must know the test tasks' types to route them)
from sentinel_celery.cluster.processes import start_worker, wait_for
from sentinel_celery.config import load_config, set_config
from sentinel_celery.ops.embedded import EmbeddedRedis, redis_answers
from sentinel_celery.ops.redis_ha import RedisHA
from sentinel_celery.plugin import create_app

# the GitHub fixtures (gh_env, gh_cfg, gh_repo, mirror) for every test module, and the private-Redis ones
# of the fault tests (private_redis, private_rclient, private_sentinel_env, runlog)
pytest_plugins = ["tests.github_support", "tests.faults_support"]

FAST_SHARED = {
    "distributed": {
        "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
        "heartbeat": {"intervalMs": 300, "staleThresholdMs": 1500, "recoveryEnabled": True},
    }
}


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if redis_answers(url):
        yield url
        return
    with EmbeddedRedis() as private_url:
        yield private_url


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])


@pytest.fixture(scope="session")
def used_namespaces(redis_url):
    """Every test namespace of the session; at the end, none may have keys left in Redis."""
    used: list[str] = []
    yield used
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        left = {ns: keys for ns in used if (keys := sorted(client.scan_iter(match=f"{ns}*", count=1000)))}
    finally:
        client.close()
    # a key here was written after its test ended (e.g. by a lease's renewal thread the test never released)
    assert not left, "keys left in Redis after their tests: " + "; ".join(
        f"{ns} {keys[:5]}{' ...' if len(keys) > 5 else ''}" for ns, keys in left.items())


@pytest.fixture
def namespace(redis_url, used_namespaces):
    """A fresh key prefix (Sentinel's namespace, kombu's and the result backend's global_keyprefix);
    everything under it is deleted when the test ends, after the workers it started have stopped."""
    ns = f"st-{uuid.uuid4().hex[:10]}:"
    used_namespaces.append(ns)
    yield ns
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        delete_namespace(client, ns)
    finally:
        client.close()


@pytest.fixture
def rclient(redis_url, namespace):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    delete_namespace(client, namespace)


@pytest.fixture
def shared_config():
    """The shared.json of a test's cluster; override this fixture in a test module to change it."""
    return FAST_SHARED


@pytest.fixture
def config_dir(tmp_path, shared_config):
    d = tmp_path / "config"
    d.mkdir()
    (d / "shared.json").write_text(json.dumps(shared_config))
    return d


@pytest.fixture
def sentinel_env(monkeypatch, redis_url, namespace, config_dir, rclient):
    """Environment shared by this test process and the workers it starts."""
    env = {"REDIS_URL": redis_url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_BROKER_PREFIX": namespace,
           "SENTINEL_CONFIG_DIR": str(config_dir)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WORKER_ID", raising=False)
    cfg = load_config()
    set_config(cfg)
    return env


@pytest.fixture
def celery_client(sentinel_env):
    app = create_app("sentinel_celery")
    yield app
    app.close()


@pytest.fixture
def redis_ha(tmp_path):
    """A Redis Sentinel deployment of its own (primary, replica, three sentinels on free loopback ports)."""
    ha = RedisHA(tmp_path / "redis-ha")
    try:
        yield ha.start()
    finally:
        ha.stop()


@pytest.fixture
def workers(sentinel_env, tmp_path, rclient, namespace):
    """Start real worker processes: ``workers.start("w1", queues=["build"], concurrency=1)``."""
    started = []

    class Workers:
        def start(self, worker_id, *, env=None, wait=True, include=("tests.jobs",), **options):
            w = start_worker(worker_id, env={**sentinel_env, **(env or {})}, log_dir=tmp_path,
                             include=include, **options)
            started.append(w)
            if wait:
                self.wait_ready(w)
            return w

        def wait_ready(self, w, timeout=45):
            def ready():
                if not w.alive():
                    raise RuntimeError(f"worker {w.worker_id} exited early:\n{w.log()[-3000:]}")
                return rclient.zscore(f"{namespace}workers", w.worker_id) is not None and \
                    "ready." in w.log()
            wait_for(ready, timeout, message=f"worker {w.worker_id} to be ready")

    yield Workers()
    for w in started:
        w.stop(timeout=15)


def dump_logs(workers_started):
    return "\n".join(f"--- {w.worker_id} ---\n{w.log()[-2000:]}" for w in workers_started)
