"""Sentinel on RabbitMQ (``amqp://``): real RabbitMQ, real workers, real kill -9 and SIGSTOP.

Each test uses its own vhost on the shared RabbitMQ (or a private node), deleted afterwards; the
consumer-timeout test starts its own node with ``consumer_timeout = 5000``.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
from click.testing import CliRunner

from sentinel_celery.broker.amqp_broker import AmqpBroker
from sentinel_celery.broker.amqp_held import REPUBLISH_HEADER, HeldMessages
from sentinel_celery.broker.factory import broker_for, broker_for_config
from sentinel_celery.broker.rabbitmq_management import ManagementAPI
from sentinel_celery.cli import main as cli
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.cluster.snapshot import collect_snapshot
from sentinel_celery.config import ConfigError, load_config, set_config
from sentinel_celery.plugin import create_app
from sentinel_celery.state.failovers import read_dead_letters, read_events
from sentinel_celery.state.leases import RedisLeaseBackend
from sentinel_celery.state.registry import get_registry
from tests import failover_jobs  # noqa: F401  (the client routes these by their task type)
from tests.failover_support import poison_until_dead_lettered
from tests.rabbitmq_support import amqp_url, private_rabbitmq, rabbitmq_node  # noqa: F401 (fixtures)

INCLUDE = ("tests.jobs", "tests.failover_jobs")
TRACEBACK_MARKERS = ("Traceback", "PRECONDITION_FAILED", "Unrecoverable error")


@pytest.fixture
def shared_config():
    return {
        "distributed": {
            "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
            "heartbeat": {"intervalMs": 300, "staleThresholdMs": 1500, "recoveryEnabled": True,
                          "pingTimeoutMs": 500},
            "failover": {"maxRecoveries": 2},
        }
    }


def _use_broker(monkeypatch, sentinel_env, url, management_url=None):
    env = {**sentinel_env, "SENTINEL_BROKER_URL": url}
    monkeypatch.setenv("SENTINEL_BROKER_URL", url)
    if management_url:
        env["RABBITMQ_MANAGEMENT_URL"] = management_url
        monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", management_url)
    set_config(load_config())
    return env


@pytest.fixture
def amqp_env(monkeypatch, sentinel_env, amqp_url):  # noqa: F811
    return _use_broker(monkeypatch, sentinel_env, amqp_url)


@pytest.fixture
def amqp_client(amqp_env):
    app = create_app("sentinel_celery")
    yield app
    app.close()


def start(workers, env, *specs):
    procs = [workers.start(wid, queues=queues, concurrency=c, include=INCLUDE, wait=False, env=env)
             for wid, queues, c in specs]
    for p in procs:
        workers.wait_ready(p)
    return procs


def runs(rclient, namespace, tag=None):
    out = [json.loads(r) for r in rclient.lrange(f"{namespace}test:runs", 0, -1)]
    return [r for r in out if tag is None or r["tag"] == tag]


def no_tracebacks(*procs):
    for p in procs:
        log = p.log()
        for marker in TRACEBACK_MARKERS:
            assert marker not in log, f"{p.worker_id}: {marker}\n{log[-3000:]}"


def test_config_names_a_bad_broker_url_and_management_url(monkeypatch, sentinel_env):
    monkeypatch.setenv("SENTINEL_BROKER_URL", "kafka://127.0.0.1:9092")
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "127.0.0.1:15672")
    with pytest.raises(ConfigError) as err:
        load_config()
    text = str(err.value)
    assert "'broker.url'" in text and "'kafka'" in text
    assert "'rabbitmq.managementUrl'" in text


def test_queue_lengths_ages_and_moves_over_amqp(amqp_client, rclient, namespace):
    broker = broker_for(amqp_client)
    assert isinstance(broker, AmqpBroker)
    with amqp_client.connection_for_write() as conn:
        for i in range(3):
            amqp_client.send_task("tests.fo.slow", kwargs={"tag": f"q{i}"}, queue="build", connection=conn)
    stats = broker.queue_stats(["build", "no-such-queue"], time.time())
    assert stats["build"]["length"] == 3 and stats["build"]["oldest_age_seconds"] is not None
    assert stats["no-such-queue"] == {"length": 0, "oldest_age_seconds": None}
    assert broker.depths(["build"]) == {"build": 3}  # reading the age put the message back

    oldest = broker.oldest("build")
    assert oldest.task_name == "tests.fo.slow" and oldest.message["headers"]["id"]
    broker.put_back(oldest)
    again = broker.oldest("build")
    assert again.task_id == oldest.task_id  # put back first in line
    assert broker.move_oldest(again, "sentinel.direct.x", home="build")
    moved = broker.move_all("build", "test", limit=1)
    assert len(moved) == 1
    assert broker.depths(["build", "sentinel.direct.x", "test"]) == {"build": 1, "sentinel.direct.x": 1, "test": 1}
    back = broker.move_all("sentinel.direct.x", lambda message: message["properties"]["sentinel_home"])
    assert [(waiting.task_id, dest) for waiting, dest in back] == [(again.task_id, "build")]
    assert broker.depths(["build", "sentinel.direct.x"]) == {"build": 2, "sentinel.direct.x": 0}

    snapshot = collect_snapshot(load_config(), app=amqp_client)
    assert snapshot["queues"]["build"]["length"] == 2
    assert broker_for_config(load_config()).depths(["build"]) == {"build": 2}
    broker.close()


def test_a_duplicate_delivery_is_refused_and_a_republished_copy_claimed_once(rclient, namespace):
    held = HeldMessages(rclient, namespace, 60)
    envelope = {"headers": {"id": "t-1", "retries": 0, "task": "x"}, "properties": {}, "body": ""}
    token = held.claim("inst-a", envelope, "", "build")
    assert token and held.exists(token)
    assert held.claim("inst-b", envelope, "", "build") is None  # RabbitMQ's requeued copy
    assert held.claim("inst-b", {**envelope, "headers": {**envelope["headers"], "retries": 1}}, "", "b")  # a retry
    record = held.prepare_restore(token, "gen1")
    assert record["token"] == token and held.prepare_restore(token, "gen2") is None  # one restorer
    held.finish_restore(record)
    assert not held.exists(token)  # the zombie's fencing check now fails
    stale = {**envelope, "headers": {**envelope["headers"], REPUBLISH_HEADER: "gen0"}}
    assert held.claim("inst-c", stale, "", "build") is None
    copy = {**envelope, "headers": {**envelope["headers"], REPUBLISH_HEADER: "gen1"}}
    assert held.claim("inst-c", copy, "", "build")
    assert held.claim("inst-d", copy, "", "build") is None


def test_worker_on_amqp_runs_tasks_with_every_duty_and_no_traceback(workers, amqp_env, amqp_client, rclient,
                                                                    namespace):
    (w1,) = start(workers, amqp_env, ("rq-a", ["build", "test"], 2))
    results = [amqp_client.send_task("tests.fo.slow", kwargs={"tag": f"ok{i}", "first": 0.2}) for i in range(6)]
    assert [r.get(timeout=30)["worker"] for r in results] == ["rq-a"] * 6
    time.sleep(3)  # a few passes of the monitor, coordination and metrics duties
    out = CliRunner().invoke(cli, ["cluster", "metrics"])
    assert out.exit_code == 0, out.output
    assert "build" in out.output
    assert not rclient.keys(f"{namespace}amqp:held:*")  # every finished task's record is gone
    no_tracebacks(w1)


def test_kill9_on_amqp_reruns_the_job_once_elsewhere_and_records_it(workers, amqp_env, amqp_client, rclient,
                                                                    namespace):
    (wa,) = start(workers, amqp_env, ("rq-a", ["build"], 1))
    running = amqp_client.send_task("tests.fo.slow", kwargs={"tag": "running"})
    wait_for(lambda: runs(rclient, namespace, "running"), 30, message="the first run on rq-a")
    prefetched = amqp_client.send_task("tests.fo.slow", kwargs={"tag": "prefetched", "first": 0})
    inst = get_registry().get("rq-a")["instance"]
    wait_for(lambda: len(rclient.smembers(f"{namespace}tags:{inst}")) == 2, 15, message="rq-a to hold both")
    (wb,) = start(workers, amqp_env, ("rq-b", ["build"], 1))

    killed_at = time.time()
    wa.kill9()
    rerun = wait_for(lambda: [r for r in runs(rclient, namespace, "running") if r["worker"] == "rq-b"], 30,
                     message="the running task to start again on rq-b")[0]
    assert rerun["at"] - killed_at < 15
    assert running.get(timeout=30)["worker"] == "rq-b"
    assert prefetched.get(timeout=30)["worker"] == "rq-b"
    time.sleep(2)  # no second copy turns up (RabbitMQ held nothing: both were acked on receipt)
    assert [r["worker"] for r in runs(rclient, namespace, "running")] == ["rq-a", "rq-b"]
    assert [r["worker"] for r in runs(rclient, namespace, "prefetched")] == ["rq-b"]
    (event,) = read_events(rclient, namespace, 10)
    assert event["worker"] == "rq-a"
    recovered = {t["id"]: t for t in event["tasks_recovered"]}
    assert set(recovered) == {running.id, prefetched.id}
    assert recovered[running.id]["was_running"] and not recovered[prefetched.id]["was_running"]
    no_tracebacks(wb)


def test_poison_task_on_amqp_goes_to_the_dead_letters(workers, amqp_env, amqp_client, rclient, namespace):
    wa, wb = start(workers, amqp_env, ("rq-p1", ["build"], 1), ("rq-p2", ["build"], 1))
    bad = poison_until_dead_lettered(amqp_client)
    assert not wa.alive() and not wb.alive()
    assert sorted(r["worker"] for r in runs(rclient, namespace, "poison")) == ["rq-p1", "rq-p2"]
    (letter,) = read_dead_letters(rclient, namespace)
    assert letter["id"] == bad.id and letter["killed"] == 2
    assert broker_for(amqp_client).depths(["build"]) == {"build": 0}  # not run again
    assert not rclient.keys(f"{namespace}amqp:held:*")


def test_hung_worker_on_amqp_is_failed_over_in_seconds_and_stores_nothing_stale(
        private_rabbitmq, workers, monkeypatch, sentinel_env, rclient, namespace):  # noqa: F811
    """SIGSTOP keeps the TCP connection open: RabbitMQ would keep pushing to the frozen consumer until
    its heartbeat expires; failover closes its connections through the management API."""
    node = private_rabbitmq(management=True)
    env = _use_broker(monkeypatch, sentinel_env, node.url, node.management_url)
    app = create_app("sentinel_celery")
    (wz,) = start(workers, env, ("rq-z", ["build"], 1))
    job = app.send_task("tests.fo.leased", kwargs={"tag": "z", "first": 8, "then": 0.5})
    first = wait_for(lambda: runs(rclient, namespace, "z"), 30, message="rq-z to start the job")[0]
    incarnation = get_registry().get("rq-z")["incarnation"]
    (wb,) = start(workers, env, ("rq-b", ["build"], 1))
    # the management API lists a connection once its first statistics are in (every 5 s)
    api = ManagementAPI(node.management_url)
    wait_for(lambda: any((c.get("client_properties") or {}).get("sentinel_pid") == wz.pid for c in api.connections()),
             15, message="rq-z's connections to show in the management API")

    stopped_at = time.time()
    os.killpg(wz.pid, signal.SIGSTOP)
    try:
        rerun = wait_for(lambda: [r for r in runs(rclient, namespace, "z") if r["worker"] == "rq-b"], 30,
                         message="the job to start again on rq-b")[0]
        assert rerun["at"] - stopped_at <= 10
        assert job.get(timeout=30)["worker"] == "rq-b"
        assert "broker connection(s) of rq-z" in wb.log()
        time.sleep(max(0.0, first["at"] + 8.5 - time.time()))
    finally:
        os.killpg(wz.pid, signal.SIGCONT)
    reg = get_registry()
    wait_for(lambda: (reg.get("rq-z")["incarnation"] or 0) > incarnation, 30,
             message="rq-z to re-register as a new incarnation")
    wait_for(lambda: "discarding the" in wz.log(), 15, message="rq-z to discard its stale outcome")
    time.sleep(0.5)
    assert job.get(timeout=5)["worker"] == "rq-b"  # the re-run's result was not overwritten
    (stats,) = [s for s in RedisLeaseBackend(rclient, namespace).stats() if s["name"] == "fo:z"]
    assert stats["fenced"] == 1
    assert [r["worker"] for r in runs(rclient, namespace, "z") if r.get("phase") == "start"] == ["rq-z", "rq-b"]
    app.close()


def test_healthy_job_longer_than_consumer_timeout_runs_once(private_rabbitmq, workers, monkeypatch,  # noqa: F811
                                                            sentinel_env, rclient, namespace):
    node = private_rabbitmq(consumer_timeout_ms=5000)
    env = _use_broker(monkeypatch, sentinel_env, node.url)
    app = create_app("sentinel_celery")
    (w,) = start(workers, env, ("rq-long", ["build"], 1))
    job = app.send_task("tests.fo.slow", kwargs={"tag": "long", "first": 15})
    after = app.send_task("tests.fo.slow", kwargs={"tag": "after", "first": 0})  # waits behind it, > 5 s
    assert job.get(timeout=60)["worker"] == "rq-long"
    assert after.get(timeout=30)["worker"] == "rq-long"
    assert [r["worker"] for r in runs(rclient, namespace, "long")] == ["rq-long"]
    assert [r["worker"] for r in runs(rclient, namespace, "after")] == ["rq-long"]
    assert w.alive()
    no_tracebacks(w)
    app.close()


def test_graceful_stop_on_amqp_finishes_its_job_and_gives_back_what_never_ran(workers, amqp_env, amqp_client,
                                                                               rclient, namespace):
    (wa,) = start(workers, amqp_env, ("rq-a", ["build"], 1))
    running = amqp_client.send_task("tests.fo.slow", kwargs={"tag": "finishing", "first": 3})
    wait_for(lambda: runs(rclient, namespace, "finishing"), 30, message="rq-a to start")
    queued = [amqp_client.send_task("tests.fo.slow", kwargs={"tag": f"queued-{i}", "first": 0}) for i in range(2)]
    inst = get_registry().get("rq-a")["instance"]
    wait_for(lambda: len(rclient.smembers(f"{namespace}tags:{inst}")) == 3, 15,
             message="rq-a to hold all three (acknowledged on receipt, recorded)")
    start(workers, amqp_env, ("rq-b", ["build"], 1))

    assert wa.stop(timeout=30) == 0  # SIGTERM: warm shutdown
    assert running.get(timeout=10)["worker"] == "rq-a"
    for i, r in enumerate(queued):
        assert r.get(timeout=30)["worker"] == "rq-b"  # given back at shutdown: RabbitMQ no longer had them
        assert len(runs(rclient, namespace, f"queued-{i}")) == 1
    assert len(runs(rclient, namespace, "finishing")) == 1
    assert read_events(rclient, namespace, 10) == []  # no failover was needed
    assert not rclient.keys(f"{namespace}amqp:held:*")


def test_a_full_prefetch_window_pauses_consuming_and_resumes_when_a_task_finishes(workers, amqp_env, amqp_client,
                                                                                   rclient, namespace):
    """Prefetch 1: RabbitMQ cannot be told "0", so with its one slot held the worker cancels its consumers
    (nothing more is pushed to it) and consumes again when the task finishes."""
    w = workers.start("rq-w", queues=["build"], concurrency=1, include=INCLUDE, env=amqp_env,
                      extra=["--prefetch-multiplier", "1"])
    first = amqp_client.send_task("tests.fo.slow", kwargs={"tag": "w0", "first": 2})
    wait_for(lambda: runs(rclient, namespace, "w0"), 30, message="the first job to start")
    rest = [amqp_client.send_task("tests.fo.slow", kwargs={"tag": f"w{i}", "first": 0.2}) for i in range(1, 4)]
    time.sleep(0.5)
    assert broker_for(amqp_client).depths(["build"]) == {"build": 3}  # none pushed to the paused worker
    assert first.get(timeout=30)["worker"] == "rq-w"
    assert [r.get(timeout=30)["worker"] for r in rest] == ["rq-w"] * 3
    no_tracebacks(w)
