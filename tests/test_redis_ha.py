"""Redis high availability with real processes: a primary, a replica (``--replicaof``) and three
``redis-server --sentinel`` on loopback, two Celery workers on ``REDIS_URL=redis+sentinel://...``,
100 leased tasks, and the primary killed with kill -9 in the middle of the run."""
import json
import threading
import time

import pytest
from click.testing import CliRunner

from sentinel_celery.cli import main
from sentinel_celery.cluster.processes import start_worker, wait_for
from sentinel_celery.config import load_config, set_config
from sentinel_celery.plugin import create_app
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.leases import RedisLeaseBackend, try_acquire
from sentinel_celery.state.registry import RedisRegistry
from tests import ha_jobs

pytestmark = pytest.mark.timeout(90)

TASKS = 100
KILL_AFTER_ENDED = 30
HA_SHARED = {
    "distributed": {
        "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
        "heartbeat": {"intervalMs": 300, "staleThresholdMs": 1500, "recoveryEnabled": True, "pingTimeoutMs": 500},
    },
    "redis": {"failoverWaitSeconds": 30},
}


@pytest.fixture
def ha_cluster(redis_ha, tmp_path, monkeypatch, redis_url, namespace):
    """Two workers on the Sentinel deployment; the witness (what ran) in the test Redis."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "shared.json").write_text(json.dumps(HA_SHARED))
    env = {"REDIS_URL": redis_ha.url, "SENTINEL_NAMESPACE": namespace, "SENTINEL_BROKER_PREFIX": namespace,
           "SENTINEL_CONFIG_DIR": str(config_dir), "HA_WITNESS_URL": redis_url, "HA_WITNESS_PREFIX": namespace}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WORKER_ID", raising=False)
    set_config(load_config())
    procs = [start_worker(wid, env=env, log_dir=tmp_path, include=("tests.ha_jobs",), queues=["build"],
                          concurrency=2) for wid in ("ha-a", "ha-b")]
    ha_client = get_redis(redis_ha.url)
    try:
        for proc in procs:
            def ready(proc=proc):
                if not proc.alive():
                    raise RuntimeError(f"worker {proc.worker_id} exited early:\n{proc.log()[-3000:]}")
                return ha_client.zscore(f"{namespace}workers", proc.worker_id) is not None and "ready." in proc.log()
            wait_for(ready, 45, message=f"worker {proc.worker_id} to be ready")
        app = create_app("sentinel_celery")
        yield app, procs, ha_client
        app.close()
    finally:
        for proc in procs:
            proc.stop(timeout=15)


def witness_runs(rclient, namespace):
    return [json.loads(r) for r in rclient.lrange(f"{namespace}runs", 0, -1)]


def test_a_killed_primary_loses_no_acknowledged_task_and_no_token_goes_back(redis_ha, ha_cluster, rclient,
                                                                             namespace):
    app, procs, ha_client = ha_cluster
    pids = {p.worker_id: p.pid for p in procs}
    acknowledged: dict[str, float] = {}  # task id -> when its publish returned
    send_failures = []
    stop = threading.Event()

    def send_all():
        for n in range(TASKS):
            task_id = f"ha-{n}"
            while not stop.is_set():
                try:
                    # this app, not the thread's current one (Celery's current app is per thread)
                    app.send_task(ha_jobs.step.name, kwargs={"n": n}, task_id=task_id)
                    acknowledged[task_id] = time.time()
                    break
                except Exception as exc:  # the master is switching: the sender tries again, as an app would
                    send_failures.append(repr(exc))
                    time.sleep(0.2)
            time.sleep(0.05)

    def runs():
        return witness_runs(rclient, namespace)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    try:
        wait_for(lambda: sum(r["phase"] == "end" for r in runs()) >= KILL_AFTER_ENDED, 40, interval=0.2,
                 message=f"{KILL_AFTER_ENDED} tasks to end")
        # a lease acknowledged just before the kill must be held on the new primary
        backend = RedisLeaseBackend(ha_client, namespace)
        held = try_acquire("ha:held-across", 60, worker="the-test", backend=backend, renew=False)
        killed_at = time.time()
        old = redis_ha.kill_primary()
        new = redis_ha.wait_switch(old, timeout=30)
        switched_at = time.time()
        sender.join(timeout=45)
        try:
            wait_for(lambda: {r["task_id"] for r in runs() if r["phase"] == "end"} >= set(acknowledged), 45,
                     interval=0.25, message="every acknowledged task to end")
        except TimeoutError:
            ended = {r["task_id"] for r in runs() if r["phase"] == "end"}
            started = {r["task_id"] for r in runs() if r["phase"] == "start"}
            missing = sorted(set(acknowledged) - ended, key=lambda t: int(t.split("-")[1]))
            raise AssertionError(f"{len(missing)} acknowledged tasks never ended: {missing} (started: "
                                 f"{sorted(started & set(missing))}); killed at {killed_at:.2f}\n" + "\n".join(
                                     f"--- {p.worker_id} ---\n{p.log()[-4000:]}" for p in procs)) from None
    finally:
        stop.set()

    all_runs = runs()
    ends: dict[str, int] = {}
    for r in all_runs:
        if r["phase"] == "end":
            ends[r["task_id"]] = ends.get(r["task_id"], 0) + 1
    lost = sorted(set(acknowledged) - set(ends))
    twice = sorted(t for t, count in ends.items() if count > 1)
    assert len(acknowledged) == TASKS
    assert (len(lost), len(twice)) == (0, 0), f"lost {len(lost)}: {lost}; run twice {len(twice)}: {twice}"

    # tokens: every one handed out after the kill is above every one handed out before it
    starts = [r for r in all_runs if r["phase"] == "start"]
    before = [r["token"] for r in starts if r["at"] < killed_at]
    after = [r["token"] for r in starts if r["at"] >= killed_at]
    assert before and after
    assert min(after) > max(before), (max(before), sorted(after)[:5])

    # the workers resumed without a restart: the same processes ran tasks after the switch
    assert all(p.alive() for p in procs)
    assert {r["worker"] for r in starts if r["at"] > switched_at} == {"ha-a", "ha-b"}
    assert {r["worker"]: r["pid"] for r in starts} and all(
        p.proc.pid == pids[p.worker_id] for p in procs)

    # nothing is left in kombu's unacked hash for a visibility timeout to run a second time
    leftover = lambda: ha_client.hkeys(f"{namespace}unacked")  # noqa: E731
    try:
        wait_for(lambda: not leftover(), 10, message="kombu's unacked hash to empty")
    except TimeoutError:
        raise AssertionError(f"left unacked: {leftover()}") from None

    # the acknowledged lease survived the switch, with its token
    assert ha_client.hget(f"{namespace}lease:ha:held-across", "token") == str(held.token)
    assert ha_client.connection_pool.get_master_address()[1] == new
    held.release()

    # no live worker was declared dead
    assert read_events(ha_client, namespace, 100) == []
    registry = RedisRegistry(ha_client, namespace, HA_SHARED["distributed"]["heartbeat"]["staleThresholdMs"])
    for wid in ("ha-a", "ha-b"):
        info = registry.get(wid)
        assert info.status == "online" and int(info["incarnation"]) == 1, (info.status, info.data)
    # the commands work on the deployment, through the new primary
    listed = CliRunner().invoke(main, ["workers", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {row["id"]: row["status"] for row in json.loads(listed.output)} == {"ha-a": "online", "ha-b": "online"}
    print(f"\nredis failover: {len(acknowledged)} acknowledged, lost {len(lost)}, run twice {len(twice)}, "
          f"send retries {len(send_failures)}, switch {switched_at - killed_at:.1f}s, "
          f"tokens before <= {max(before)} < after >= {min(after)}")


def test_on_the_sentinel_transport_a_killed_workers_message_is_recorded_and_given_back(ha_cluster, rclient,
                                                                                    namespace):
    app, procs, ha_client = ha_cluster
    assert all("Connected to sentinel_celery.broker.redis_transport:TrackingSentinelTransport" in p.log()
               for p in procs)
    app.send_task(ha_jobs.hold.name, kwargs={"tag": "victim"}, task_id="victim")
    first = wait_for(lambda: [r for r in witness_runs(rclient, namespace) if r["tag"] == "victim"], 30,
                     message="the victim to start")[0]
    victim = next(p for p in procs if p.worker_id == first["worker"])
    registry = RedisRegistry(ha_client, namespace, HA_SHARED["distributed"]["heartbeat"]["staleThresholdMs"])
    instance = registry.get(victim.worker_id)["instance"]
    # the holder was written in kombu's own unacked transaction: the tag is there, and it is the unacked one
    assert ha_client.smembers(f"{namespace}tags:{instance}") == set(ha_client.hkeys(f"{namespace}unacked"))
    assert len(ha_client.hkeys(f"{namespace}unacked")) == 1
    victim.kill9()
    rerun = wait_for(lambda: [r for r in witness_runs(rclient, namespace)
                              if r["tag"] == "victim" and r["worker"] != victim.worker_id], 30,
                     message="the victim to run again on the other worker")[0]
    assert rerun["recovered"] == 1
    (event,) = read_events(ha_client, namespace, 10)
    assert event["worker"] == victim.worker_id, event
    assert [t["id"] for t in event["tasks_recovered"]] == ["victim"], event["tasks_recovered"]
