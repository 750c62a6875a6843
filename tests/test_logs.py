"""Centralized logs: shipped from a real worker's task, queried and followed; the handler never blocks."""
import json
import logging
import threading
import time
import uuid

import pytest
from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import get_config, load_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import try_acquire
from sentinel_celery.state.logs import LogQuery, RedisLogHandler, follow, parse_since, query


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_task_logs_from_a_real_worker_are_shipped_and_queried(workers, celery_client, sentinel_env):
    workers.start("lw", queues=["build"], concurrency=1, include=("tests.jobs", "tests.opsjobs"))
    tag = uuid.uuid4().hex[:8]
    task_id = celery_client.send_task("tests.ops.log_lines", args=[tag], kwargs={"fail": True},
                                      job_type="build").get(timeout=30)

    def shipped():
        out = run("logs", "--search", tag, "--json")
        rows = json.loads(out.output) if out.exit_code == 0 and out.output.startswith("[") else []
        return rows if len(rows) >= 2 else None
    rows = wait_for(shipped, 30, 0.3, "the task's log records in the stream")
    warning, error = rows[0], rows[1]
    assert warning["msg"] == f"shipping {tag}" and warning["level"] == "WARNING"
    assert warning["worker"] == "lw" and warning["task_id"] == task_id
    assert warning["task_name"] == "tests.ops.log_lines"
    assert error["level"] == "ERROR" and "ValueError: broken" in error["msg"] and "Traceback" in error["msg"]

    errors = json.loads(run("logs", "--search", tag, "--level", "error", "--json").output)
    assert [e["level"] for e in errors] == ["ERROR"]
    assert json.loads(run("logs", "--search", tag, "--since", "10m", "--json").output) == rows
    assert json.loads(run("logs", "--task", task_id, "--level", "warning", "--json").output) == rows
    out = run("logs", "--search", tag, "--worker", "someone-else")
    assert out.exit_code == 0 and "no log records match" in out.output
    text = run("logs", "--search", tag).output
    assert f"lw WARNING  tests.ops.log_lines[{task_id}] shipping {tag}" in text
    # the worker's own records (main process) are shipped too
    assert query(get_redis(), get_config().namespace, LogQuery(worker="lw", search="ready"), limit=5)

    # `worker status` shows the worker, a lease it holds and its recent logs
    lease = try_acquire("env:qa", 60, worker="lw")
    try:
        out = run("worker", "status", "lw", "--json")
        assert out.exit_code == 0, out.output
        data = json.loads(out.output)
        assert data["id"] == "lw" and data["status"] == "online" and data["queues"][0] == "build"
        assert ("env:qa", lease.token) in [(h["name"], h["token"]) for h in data["leases"]]
        assert any(tag in e["msg"] for e in data["recent_logs"])
        text = run("worker", "status", "lw").output
        assert "env:qa" in text and "online" in text and f"shipping {tag}" in text
    finally:
        lease.release()
    out = run("worker", "status", "nobody")
    assert out.exit_code == 1 and "no worker 'nobody'" in out.output


def test_follow_yields_new_records_and_filters(sentinel_env):
    cfg = get_config()
    handler = RedisLogHandler(cfg, flush_interval=0.05)
    log = logging.getLogger(f"test.follow.{uuid.uuid4().hex[:6]}")
    log.addHandler(handler)
    log.propagate = False
    got, stop = [], threading.Event()

    def reader():
        for e in follow(get_redis(), cfg.namespace, LogQuery(level="ERROR"), block_ms=200, stop=stop):
            got.append(e)
            if len(got) == 2:
                break

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.5)  # the reader starts at "$": only records after it
    try:
        for i in range(3):
            log.info("info %d", i)
            log.error("error %d", i)
        t.join(timeout=30)
        assert [e["msg"] for e in got] == ["error 0", "error 1"]
    finally:
        stop.set()
        log.removeHandler(handler)


def test_handler_never_blocks_and_stays_bounded_when_redis_is_away(sentinel_env):
    cfg = load_config(overrides={"redis.url": "redis://127.0.0.1:1/0"})
    handler = RedisLogHandler(cfg, max_buffer=100, flush_interval=0.05)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "message %d", (1,), None)
    started = time.monotonic()
    for _ in range(5000):
        handler.emit(record)
    assert time.monotonic() - started < 5.0
    wait_for(lambda: handler.dropped >= 4900, 10, message="drops to be counted")
    assert len(handler._buffer) <= 100 and handler.shipped == 0


def test_stream_is_capped(sentinel_env, rclient, namespace):
    cfg = load_config(overrides={"monitoring.logStreamMaxLen": 100})
    handler = RedisLogHandler(cfg)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "m", (), None)
    for _ in range(2000):
        handler.emit(record)
    handler.flush()
    assert handler.shipped == 2000
    assert rclient.xlen(f"{namespace}logs") < 400  # MAXLEN ~ trims in whole nodes


def test_parse_since():
    assert parse_since("90s") == 90 and parse_since("10m") == 600 and parse_since("2h") == 7200
    assert parse_since("1d") == 86400 and parse_since("5") == 5
    with pytest.raises(ValueError, match="30s, 10m"):
        parse_since("yesterday")
    out = CliRunner().invoke(main, ["logs", "--since", "yesterday"])
    assert out.exit_code == 2 and "cannot read duration" in out.output
