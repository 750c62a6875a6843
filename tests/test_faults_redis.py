"""Redis faults with real worker processes and a private redis-server: an outage longer than the stale
threshold (append-only on: Redis comes back with its data), and a restart that comes back empty."""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from click.testing import CliRunner

from sentinel_celery.cli import main as cli
from sentinel_celery.cluster.alerts import AlertEvaluator, GitHubIssueSink, LogSink, WebhookSink
from sentinel_celery.cluster.failover import Failover
from sentinel_celery.cluster.monitor import Monitor
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import get_config
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.leases import try_acquire
from sentinel_celery.state.outbox import outbox_key
from sentinel_celery.state.registry import get_registry
from tests import fault_jobs  # noqa: F401  (the client routes these by their task type)
from tests.conftest import dump_logs
from tests.faults_support import INCLUDE, tally
from tests.private_cluster import on_private_redis, private_redis_client  # noqa: F401
from tests.private_redis import NetworkCut


@pytest.fixture
def shared_config():
    return {"distributed": {
        "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
        "heartbeat": {"intervalMs": 500, "staleThresholdMs": 3000, "recoveryEnabled": True, "pingTimeoutMs": 1000},
    }}



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


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("persistence", [False], ids=["no-persistence"])
def test_redis_restarting_empty_is_reported_not_mistaken_for_a_failover(workers, celery_client, private_redis, rclient,
                                                                         namespace, runlog, webhook, caplog):
    procs = [workers.start(f"re-{i}", queues=["build"], concurrency=2, include=INCLUDE, wait=False) for i in range(2)]
    for p in procs:
        workers.wait_ready(p)
    long = celery_client.send_task("tests.faults.work", kwargs={"n": -1, "seconds": 6})
    wait_for(lambda: tally(runlog)["starts"], 30, message="the long task to start")
    for i in range(30):  # queued: most of them vanish with Redis' data
        celery_client.send_task("tests.faults.work", kwargs={"n": i, "seconds": 0.5})
    wait_for(lambda: tally(runlog)["ends"] >= 4, 60, message="a few tasks to finish")
    assert rclient.get(f"{namespace}cluster:marker")
    before = try_acquire("faults:token", 5, renew=False)
    before.release()
    private_redis.restart(down_s=1.0)
    restarted_at = time.time()

    def errors():
        return [line for p in procs for line in p.log().splitlines() if "Redis lost its data" in line]
    wait_for(lambda: len(errors()) == len(procs), 30, message="every worker to report the data loss")
    time.sleep(1.5)  # a few more beats: still once each
    logs = dump_logs(procs)
    lines = errors()
    assert len(lines) == len(procs) and all("ERROR" in line and "(restarted empty at " in line for line in lines), logs
    assert not any(re.search(r"was declared dead|given to other workers", p.log()) for p in procs), logs

    # fencing tokens never go backwards, even though Redis forgot the counter
    after = try_acquire("faults:token", 5, renew=False)
    after.release()
    assert after.token > before.token

    out = CliRunner().invoke(cli, ["cluster", "health", "--json"])
    assert out.exit_code == 1, out.output
    health = json.loads(out.output)
    assert health["status"] == "critical"
    (reason,) = [r for r in health["reasons"] if r["alert"] == "redis_data_loss"]
    assert reason["summary"].startswith("Redis lost its data (restarted empty at ")
    assert reason["summary"].endswith("); queued tasks may be lost")

    # the usual channels: log, the GitHub mirror's outbox (an issue), the webhook
    url, received = webhook
    evaluator = AlertEvaluator(get_config(), celery_client, sinks=[LogSink(), GitHubIssueSink(), WebhookSink(url)])
    with caplog.at_level(logging.WARNING, logger="sentinel.alerts"):
        opened = [t for t in evaluator.tick() if t.alert["name"] == "redis_data_loss"]
    assert [t.op for t in opened] == ["open"] and opened[0].alert["severity"] == "critical"
    assert any("Redis lost its data" in r.getMessage() and r.levelno == logging.CRITICAL for r in caplog.records)
    assert any(f["o"] == "redis_data_loss" for _, f in rclient.xrange(outbox_key(namespace)))
    wait_for(lambda: [b for b in received if b["alert"]["name"] == "redis_data_loss"], 15, message="the webhook")

    # fencing: the long task's message vanished with Redis' data, not to another worker: its result is kept
    assert long.get(timeout=30)["n"] == -1
    assert time.time() - restarted_at < 30

    out = CliRunner().invoke(cli, ["cluster", "clear-data-loss"])
    assert out.exit_code == 0 and out.output.startswith("cleared: Redis lost its data"), out.output
    health = json.loads(CliRunner().invoke(cli, ["cluster", "health", "--json"]).output)
    assert not [r for r in health["reasons"] if r["alert"] == "redis_data_loss"]


def _step(monitor):
    try:
        return monitor.step()
    except redis.RedisError:
        return None


def _silent_worker(reg):
    reg.register("quiet-w", "inst-quiet", {"nodename": "quiet-w@nowhere", "queues": ["build"], "concurrency": 1})


def test_after_its_own_reconnect_the_monitor_counts_silence_from_when_redis_answered(celery_client, private_redis,
                                                                                     namespace):
    """A network cut between the monitor and a Redis that keeps running (no restart for INFO to show)."""
    cfg = get_config()
    reg = get_registry()
    with NetworkCut(private_redis.port) as cut:
        client = redis.Redis(port=cut.port, decode_responses=True, socket_connect_timeout=1, socket_timeout=2)
        failover = Failover(celery_client, cfg, actor="m", client=client, ping=lambda nodes, timeout: set())
        monitor = Monitor(celery_client, cfg, failover=failover)
        try:
            _silent_worker(reg)
            assert _step(monitor) == [] and monitor.is_leader
            cut.cut()
            cut_at = time.monotonic()
            failed = 0
            while time.monotonic() - cut_at < 4.0:  # longer than the 3 s stale threshold
                result = _step(monitor)
                assert not result
                failed += result is None
                time.sleep(0.2)
            assert failed
            cut.restore()
            back = time.monotonic()
            assert _step(monitor) == []  # quiet-w has been silent 4 s, but the monitor could not have heard it
            while time.monotonic() - back < 2.5:
                assert _step(monitor) in ([], None)
                time.sleep(0.2)
            assert reg.get("quiet-w").status != "offline"
            # the grace does not hide a worker that really is gone: once it is over, it is declared dead
            declared = wait_for(lambda: _step(monitor), 20, interval=0.2, message="quiet-w to be declared dead")
            assert [e["worker"] for e in declared] == ["quiet-w"]
            # not before the stale threshold plus the time its consumer may need to reconnect and answer a ping
            # (at least another stale threshold)
            assert time.monotonic() - back >= 5.8
        finally:
            monitor.release()
            client.close()


def test_a_monitor_that_did_not_see_redis_restart_counts_silence_from_its_start(celery_client, private_redis,
                                                                                namespace):
    cfg = get_config()
    reg = get_registry()
    _silent_worker(reg)
    private_redis.restart(down_s=3.5)  # append-only: quiet-w is still registered, 3.5 s silent
    started = time.monotonic()
    failover = Failover(celery_client, cfg, actor="m", ping=lambda nodes, timeout: set())  # never saw the outage
    assert failover.check() == []
    assert reg.get("quiet-w").status != "offline"
    declared = wait_for(failover.check, 20, interval=0.2, message="quiet-w to be declared dead")
    assert [e["worker"] for e in declared] == ["quiet-w"] and time.monotonic() - started >= 2.0
