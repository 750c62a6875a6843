"""Failover with real worker processes and a real Redis: kill -9, a killed monitor leader, a paused
(SIGSTOP) worker that comes back, a poison task, a graceful stop, and two monitors racing."""
import json
import os
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from sentinel_celery.broker.redis_transport import TrackingTransport
from sentinel_celery.broker.redis_unacked import UnackedMessages
from sentinel_celery.cli import main as cli
from sentinel_celery.cluster.failover import Failover
from sentinel_celery.cluster.monitor import LEASE_NAME
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import get_config, load_config, set_config
from sentinel_celery.plugin import create_app
from sentinel_celery.state.failovers import read_dead_letters, read_events
from sentinel_celery.state.leases import RedisLeaseBackend, try_acquire
from sentinel_celery.state.registry import get_registry
from sentinel_celery.state.tags import RedisTagTracker
from tests import failover_jobs  # noqa: F401  (the client routes these by their task type)
from tests.failover_support import poison_until_dead_lettered

INCLUDE = ("tests.jobs", "tests.failover_jobs")


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


def start(workers, *specs):
    """Start workers in parallel: specs are (worker_id, queues, concurrency)."""
    procs = [workers.start(wid, queues=queues, concurrency=c, include=INCLUDE, wait=False)
             for wid, queues, c in specs]
    for p in procs:
        workers.wait_ready(p)
    return procs


def runs(rclient, namespace, tag=None):
    out = [json.loads(r) for r in rclient.lrange(f"{namespace}test:runs", 0, -1)]
    return [r for r in out if tag is None or r["tag"] == tag]


def instance_of(worker_id):
    return get_registry().get(worker_id)["instance"]


def tags_of(rclient, namespace, instance):
    return rclient.smembers(f"{namespace}tags:{instance}")


def events(rclient, namespace):
    return read_events(rclient, namespace, 100)


def test_kill9_gives_back_running_prefetched_and_eta_tasks(workers, celery_client, rclient, namespace):
    (wa,) = start(workers, ("fo-a", ["build"], 1))
    running = celery_client.send_task("tests.fo.slow", kwargs={"tag": "running"})
    wait_for(lambda: runs(rclient, namespace, "running"), 30, message="the first run on fo-a")
    prefetched = celery_client.send_task("tests.fo.slow", kwargs={"tag": "prefetched", "first": 0})
    eta_at = time.time() + 4
    eta = celery_client.send_task("tests.fo.slow", kwargs={"tag": "eta", "first": 0}, countdown=4)
    inst = instance_of("fo-a")
    wait_for(lambda: len(tags_of(rclient, namespace, inst)) == 3, 15, message="fo-a to hold all three")
    (wb,) = start(workers, ("fo-b", ["build"], 2))

    killed_at = time.time()
    wa.kill9()
    rerun = wait_for(lambda: [r for r in runs(rclient, namespace, "running") if r["worker"] == "fo-b"], 30,
                     message="the running task to start again on fo-b")[0]
    assert rerun["at"] - killed_at < 15  # 1.5 s stale threshold: seconds, not the visibility timeout
    assert running.get(timeout=30)["worker"] == "fo-b"
    assert prefetched.get(timeout=30)["worker"] == "fo-b"
    assert eta.get(timeout=30)["worker"] == "fo-b"
    assert [r["worker"] for r in runs(rclient, namespace, "running")] == ["fo-a", "fo-b"]
    assert [r["worker"] for r in runs(rclient, namespace, "prefetched")] == ["fo-b"]
    (eta_run,) = runs(rclient, namespace, "eta")
    assert eta_run["at"] >= eta_at - 0.5  # still honours its countdown after the move

    (event,) = events(rclient, namespace)
    assert event["worker"] == "fo-a" and event["by"] == "fo-b"
    recovered = {t["id"]: t for t in event["tasks_recovered"]}
    assert set(recovered) == {running.id, prefetched.id, eta.id}
    assert recovered[running.id]["was_running"] and not recovered[prefetched.id]["was_running"]
    assert recovered[running.id]["queues"] == ["build"]
    assert event["last_beat"] <= event["detected_at"]
    assert get_registry().get("fo-a").status == "offline"
    assert not rclient.exists(f"{namespace}tags:{inst}")

    out = CliRunner().invoke(cli, ["failover", "history", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["worker"] == "fo-a"
    out = CliRunner().invoke(cli, ["workers", "list", "--json"])
    status = {w["id"]: w["status"] for w in json.loads(out.output)}
    assert status == {"fo-a": "offline", "fo-b": "online"}


def test_healthy_task_longer_than_the_stale_threshold_runs_once(workers, celery_client, rclient, namespace):
    start(workers, ("fo-a", ["build"], 1), ("fo-b", ["build"], 1))
    long = celery_client.send_task("tests.fo.slow", kwargs={"tag": "long", "first": 5})  # > 3 x 1.5 s
    assert long.get(timeout=30)["worker"] in ("fo-a", "fo-b")
    time.sleep(1.0)  # a few more monitor passes after it finished
    assert len(runs(rclient, namespace, "long")) == 1
    assert events(rclient, namespace) == []
    assert {w.id: w.status for w in get_registry().workers()} == {"fo-a": "online", "fo-b": "online"}

    # tracking costs one SADD per task and forgets acked tags at the next beat: nothing piles up
    for r in [celery_client.send_task("tests.noop") for _ in range(20)]:
        r.get(timeout=30)
    instances = [instance_of(w) for w in ("fo-a", "fo-b")]
    wait_for(lambda: not any(tags_of(rclient, namespace, i) for i in instances), 10,
             message="acked tags to be forgotten")


def test_silent_worker_that_answers_ping_is_not_failed_over(workers, celery_client, rclient, namespace):
    """A registry entry can go quiet (slow Redis, GC pause) while the worker itself is fine."""
    start(workers, ("fo-a", ["build"], 1))
    reg = get_registry()
    nodename = reg.get("fo-a")["nodename"]
    long_ago = int(time.time() * 1000) - 60_000
    for wid, node in (("quiet", nodename), ("gone", "gone@nowhere")):
        reg.register(wid, f"instance-{wid}", {"nodename": node, "queues": ["build"], "concurrency": 1})
        rclient.zadd(reg.live_key, {wid: long_ago})
    wait_for(lambda: reg.get("gone").status == "offline", 15, message="'gone' to be declared dead")
    time.sleep(1.5)  # several more passes, each pinging 'quiet'
    quiet = reg.get("quiet")
    assert quiet.status == "stale" and quiet["state"] == "stale"
    assert [e["worker"] for e in events(rclient, namespace)] == ["gone"]


def test_monitor_leader_killed_another_takes_over(workers, celery_client, rclient, namespace):
    (wa,) = start(workers, ("fo-a", ["build"], 1))
    wait_for(lambda: rclient.hget(f"{namespace}lease:{LEASE_NAME}", "worker") == "fo-a", 10,
             message="fo-a to hold the monitor lease")
    first_token = int(rclient.hget(f"{namespace}lease:{LEASE_NAME}", "token"))
    job = celery_client.send_task("tests.fo.slow", kwargs={"tag": "on-leader"})
    # fo-b starts only once the leader runs the task: started before, it took the task itself one run in several
    wait_for(lambda: runs(rclient, namespace, "on-leader"), 30, message="the leader to run the task")
    start(workers, ("fo-b", ["build"], 1))
    killed = time.monotonic()
    wa.kill9()
    wait_for(lambda: rclient.hget(f"{namespace}lease:{LEASE_NAME}", "worker") == "fo-b", 15,
             message="fo-b to take over the monitor lease")
    took_over = time.monotonic() - killed
    assert int(rclient.hget(f"{namespace}lease:{LEASE_NAME}", "token")) > first_token
    assert job.get(timeout=30)["worker"] == "fo-b"
    (event,) = events(rclient, namespace)
    assert event["worker"] == "fo-a" and event["by"] == "fo-b"
    # the dead leader's own lease was fenced by its recovery, or had expired already
    assert took_over < 10


def test_paused_worker_comes_back_as_zombie_and_stores_nothing_stale(workers, celery_client, rclient, namespace):
    (wz,) = start(workers, ("fo-z", ["build"], 1))
    job = celery_client.send_task("tests.fo.leased", kwargs={"tag": "z", "first": 8, "then": 0.5})
    waiting = celery_client.send_task("tests.fo.slow", kwargs={"tag": "z-waiting", "first": 0})
    first = wait_for(lambda: runs(rclient, namespace, "z"), 30, message="fo-z to start the job")[0]
    inst = instance_of("fo-z")
    incarnation = get_registry().get("fo-z")["incarnation"]
    wait_for(lambda: len(tags_of(rclient, namespace, inst)) == 2, 15, message="fo-z to hold both")
    start(workers, ("fo-b", ["build"], 1))

    os.killpg(wz.pid, signal.SIGSTOP)  # the whole machine freezes: main process and pool
    try:
        wait_for(lambda: events(rclient, namespace), 20, message="fo-z to be declared dead")
        assert job.get(timeout=30)["worker"] == "fo-b"
        assert waiting.get(timeout=30)["worker"] == "fo-b"
        # let the frozen execution's sleep run out, so it would finish and store at once on resume
        time.sleep(max(0.0, first["at"] + 8.5 - time.time()))
    finally:
        os.killpg(wz.pid, signal.SIGCONT)

    reg = get_registry()
    wait_for(lambda: (reg.get("fo-z")["incarnation"] or 0) > incarnation and reg.get("fo-z").status == "online",
             15, message="fo-z to re-register as a new incarnation")
    wait_for(lambda: "discarding the" in wz.log() and "not starting task" in wz.log(), 15,
             message="fo-z to discard its stale outcome and skip the stale waiting task")
    time.sleep(0.5)
    assert job.get(timeout=5)["worker"] == "fo-b"  # the re-run's result was not overwritten
    starts = [r for r in runs(rclient, namespace, "z") if r.get("phase") == "start"]
    assert [r["worker"] for r in starts] == ["fo-z", "fo-b"]
    assert starts[1]["token"] > starts[0]["token"]  # fenced: the re-run holds a newer lease token
    ends = {r["worker"]: r for r in runs(rclient, namespace, "z") if r.get("phase") == "end"}
    assert set(ends) == {"fo-z", "fo-b"}  # the frozen body did finish, after the re-run had started
    (stats,) = [s for s in RedisLeaseBackend(rclient, namespace).stats() if s["name"] == "fo:z"]
    assert stats["fenced"] == 1 and stats["lost"] >= 1  # its release was refused: it knows it was fenced
    assert [r["worker"] for r in runs(rclient, namespace, "z-waiting")] == ["fo-b"]
    (event,) = events(rclient, namespace)
    assert event["worker"] == "fo-z" and "fo:z" in event["leases_released"]


def test_holder_is_recorded_in_the_same_transaction_as_kombus_unacked_entry(workers, celery_client, rclient, namespace):
    assert isinstance(celery_client.connection_for_read().transport, TrackingTransport)
    (wa,) = start(workers, ("fo-a", ["build"], 1))
    celery_client.send_task("tests.fo.slow", kwargs={"tag": "held", "first": 3})
    wait_for(lambda: runs(rclient, namespace, "held"), 30, message="fo-a to start")
    (tag,) = tags_of(rclient, namespace, instance_of("fo-a"))
    assert rclient.hexists(f"{namespace}unacked", tag)
    assert "could not record" not in wa.log()


def test_a_broker_prefix_outside_the_namespace_falls_back_to_the_writer_thread(workers, rclient, namespace,
                                                                               monkeypatch):
    prefix = f"broker-{namespace}"  # not a prefix of the namespace: TrackingQoS cannot address tags:<instance>
    monkeypatch.setenv("SENTINEL_BROKER_PREFIX", prefix)
    set_config(load_config())
    client = create_app("sentinel_celery")
    try:
        workers.start("fo-p", queues=["build"], concurrency=1, include=INCLUDE, env={"SENTINEL_BROKER_PREFIX": prefix})
        client.send_task("tests.fo.slow", kwargs={"tag": "held", "first": 3})
        wait_for(lambda: runs(rclient, namespace, "held"), 30, message="fo-p to start")
        (tag,) = wait_for(lambda: tags_of(rclient, namespace, instance_of("fo-p")), 10, message="the tag")
        assert rclient.hexists(f"{prefix}unacked", tag)
    finally:
        for key in rclient.scan_iter(match=f"{prefix}*"):
            rclient.delete(key)


def test_poison_task_goes_to_the_dead_letters(workers, celery_client, rclient, namespace):
    wa, wb = start(workers, ("fo-a", ["build"], 1), ("fo-b", ["build"], 1))
    bad = poison_until_dead_lettered(celery_client)
    assert not wa.alive() and not wb.alive()
    assert sorted(r["worker"] for r in runs(rclient, namespace, "poison")) == ["fo-a", "fo-b"]
    (letter,) = read_dead_letters(rclient, namespace)
    assert letter["id"] == bad.id and letter["killed"] == 2 and letter["message"]["headers"]["id"] == bad.id
    assert bad.state == "FAILURE"
    history = events(rclient, namespace)
    assert [len(e["dead_lettered"]) for e in history[:1]] == [1]
    if len(history) == 1:
        # The first death was recovered by the other worker, whose own consumer took the task back at once and
        # died of it before that recovery was recorded: the recovery stays pending, for the next monitor to
        # finish once its claim expires — not lost.
        assert rclient.hlen(f"{namespace}failover:pending") == 1
    else:
        assert [len(e["tasks_recovered"]) for e in history] == [0, 1]
    assert rclient.llen(f"{namespace}build") == 0  # not run again
    out = CliRunner().invoke(cli, ["failover", "dead-letters"])
    assert bad.id in out.output


def test_graceful_stop_finishes_or_returns_its_tasks_without_failover(workers, celery_client, rclient, namespace):
    (wa,) = start(workers, ("fo-a", ["build"], 1))
    running = celery_client.send_task("tests.fo.slow", kwargs={"tag": "finishing", "first": 3})
    wait_for(lambda: runs(rclient, namespace, "finishing"), 30, message="fo-a to start")
    queued = [celery_client.send_task("tests.fo.slow", kwargs={"tag": f"queued-{i}", "first": 0}) for i in range(2)]
    inst = instance_of("fo-a")
    wait_for(lambda: len(tags_of(rclient, namespace, inst)) == 3, 15, message="fo-a to hold all three")
    start(workers, ("fo-b", ["build"], 1))

    assert wa.stop(timeout=30) == 0  # SIGTERM: warm shutdown
    assert running.get(timeout=10)["worker"] == "fo-a"
    for i, r in enumerate(queued):
        r.get(timeout=30)
        assert len(runs(rclient, namespace, f"queued-{i}")) == 1
    assert len(runs(rclient, namespace, "finishing")) == 1
    time.sleep(2.0)  # longer than the stale threshold: a monitor pass would have noticed
    assert events(rclient, namespace) == []
    assert get_registry().get("fo-a") is None
    assert not rclient.exists(f"{namespace}tags:{inst}")


def _hold_messages(app, queue, n):
    """Take ``n`` messages from ``queue`` like a worker would (unacked), and return their tags."""
    conn = app.connection_for_read()
    simple = conn.SimpleQueue(app.amqp.queues[queue])
    tags = [simple.get(timeout=10).delivery_tag for _ in range(n)]
    return conn, tags


def test_two_monitors_recovering_one_worker_restore_each_message_once(celery_client, rclient, namespace):
    cfg = get_config()
    sent = [celery_client.send_task("tests.noop").id for _ in range(6)]
    conn, tags = _hold_messages(celery_client, "build", 6)
    # and one waiting in the dead worker's direct queue (load balancing placed it there)
    direct = celery_client.send_task("tests.noop", queue="sentinel.direct.dead-w").id
    try:
        reg = get_registry()
        reg.register("dead-w", "inst-dead", {"nodename": "dead-w@nowhere", "queues": ["build"], "concurrency": 2})
        rclient.zadd(reg.live_key, {"dead-w": int(time.time() * 1000) - 60_000})
        RedisTagTracker(rclient, namespace).record_many("inst-dead", tags)

        # two monitors both believe they must recover it (e.g. one resumed after a pause)
        first, second = (Failover(celery_client, cfg, actor=a, ping=lambda nodes, timeout: set())
                         for a in ("m1", "m2"))
        dead = first.declare_dead(reg.get("dead-w"), int(time.time() * 1000) - 60_000, reason="test")
        assert dead is not None
        assert second.declare_dead(reg.get("dead-w"), 0, reason="test") is None  # declared once
        barrier = threading.Barrier(2)
        results = {}

        def recover(monitor):
            barrier.wait()
            results[monitor.actor] = monitor.recover(dead)

        threads = [threading.Thread(target=recover, args=(m,)) for m in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        given_back = [t["id"] for e in results.values() for t in e["tasks_recovered"]]
        assert sorted(given_back) == sorted(sent)  # each once, across both monitors
        assert [i for e in results.values() for i in e["moved_home"]] == [direct]
        waiting = [json.loads(m) for m in rclient.lrange(f"{namespace}build", 0, -1)]
        assert sorted(m["headers"]["id"] for m in waiting) == sorted([*sent, direct])
        assert rclient.llen(f"{namespace}sentinel.direct.dead-w") == 0
        new_tags = {m["properties"]["delivery_tag"] for m in waiting}
        assert not new_tags & set(tags)  # restored under fresh tags
        unacked = UnackedMessages(celery_client)
        assert unacked.get_many(tags) == {}

        # another worker takes them; a third, late recovery of the same dead worker is a no-op
        conn2, taken_again = _hold_messages(celery_client, "build", 7)
        try:
            late = Failover(celery_client, cfg, actor="m3").recover(dead)
            assert late["tasks_recovered"] == [] and late["moved_home"] == []
            assert rclient.llen(f"{namespace}build") == 0
            assert len(unacked.get_many(taken_again)) == 7
        finally:
            conn2.release()
    finally:
        conn.release()


def test_operator_cleanup_commands(celery_client, rclient, namespace):
    reg = get_registry()
    reg.register("ops-w", "inst-ops", {"nodename": "ops-w@nowhere", "queues": ["build"], "concurrency": 1})
    held = try_acquire("deploy:prod", 30, worker="ops-w", renew=False)
    runner = CliRunner()

    out = runner.invoke(cli, ["locks", "cleanup", "--worker-id", "ops-w"])
    assert out.exit_code == 1 and "stop it first" in out.output
    out = runner.invoke(cli, ["workers", "cleanup", "--worker-id", "ops-w"])
    assert out.exit_code == 1 and "stop it first" in out.output
    assert RedisLeaseBackend(rclient, namespace).holder("deploy:prod")["token"] == held.token

    out = runner.invoke(cli, ["locks", "cleanup", "--worker-id", "ops-w", "--force", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["released"] == ["deploy:prod"]
    assert RedisLeaseBackend(rclient, namespace).holder("deploy:prod") is None
    assert not held.renew()  # the old holder is fenced

    out = runner.invoke(cli, ["workers", "cleanup", "--worker-id", "ops-w", "--force", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["worker"] == "ops-w"
    assert reg.get("ops-w").status == "offline"
    assert [e["by"] for e in events(rclient, namespace)] == ["operator via cli"]
