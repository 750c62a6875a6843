"""A worker started while Redis is down waits for it, one line each attempt, then starts normally.

The Redis is a private redis-server started on a free port only after the worker has started.
"""
from __future__ import annotations

import pytest
import redis

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import load_config, set_config
from sentinel_celery.ops.embedded import EmbeddedRedis, free_port
from sentinel_celery.plugin import create_app


def test_a_worker_started_while_redis_is_down_waits_then_starts(workers, sentinel_env, namespace):
    server = EmbeddedRedis(port=free_port())
    w = workers.start("wdown", queues=["build"], concurrency=1, env={"REDIS_URL": server.url}, wait=False)
    try:
        wait_for(lambda: "does not answer" in w.log() or not w.alive(), 60, message="the first warning")
        assert w.alive(), w.log()[-3000:]
        server.start()
        wait_for(lambda: "ready." in w.log() or not w.alive(), 60, message="the worker to start")
        log = w.log()
        assert w.alive() and "Traceback" not in log, log[-3000:]
        warnings = [line for line in log.splitlines() if "does not answer" in line]
        assert warnings and all(f"Redis at {server.url} does not answer (Error 111 connecting to" in line
                                and "; retrying in " in line for line in warnings), warnings
        assert "(attempt 1 of 100)" in warnings[0]
        private = redis.Redis.from_url(server.url, decode_responses=True)
        assert private.zscore(f"{namespace}workers", "wdown") is not None
        private.close()
        app = create_app("sentinel_celery", load_config(overrides={"redis.url": server.url}))
        try:
            result = app.send_task("tests.record", args=["after-outage"])
            assert result.get(timeout=30)["worker"] == "wdown"
        finally:
            app.close()
            set_config(load_config())
    finally:
        w.stop(timeout=20)
        server.stop()


@pytest.fixture
def no_retry_app_module(tmp_path, monkeypatch):
    """A worker app with ``broker_connection_max_retries = 2``."""
    (tmp_path / "few_retries_app.py").write_text(
        "from celery import Celery\nfrom sentinel_celery import install\n"
        "app = Celery('few')\napp.conf.broker_connection_max_retries = 2\ninstall(app)\n")
    return tmp_path


def test_a_worker_gives_up_after_broker_connection_max_retries_with_one_line(workers, no_retry_app_module):
    port = free_port()
    w = workers.start("wgiveup", app="few_retries_app", queues=["build"], concurrency=1, wait=False,
                      env={"REDIS_URL": f"redis://127.0.0.1:{port}/0", "PYTHONPATH": str(no_retry_app_module)})
    wait_for(lambda: not w.alive(), 60, message="the worker to give up")
    log = w.log()
    assert w.proc.returncode == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert len([line for line in log.splitlines() if "does not answer" in line and "retrying in" in line]) == 2
    assert f"sentinel: Redis at redis://127.0.0.1:{port}/0 does not answer" in log
    assert "the worker stops after 3 attempt(s)" in log
