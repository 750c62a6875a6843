"""A worker killed with kill -9 and restarted under the same WORKER_ID (a Kubernetes container restart, a
supervisor's restart loop), with real worker processes: the tasks it was running end exactly once, whether the
new incarnation registers after the stale threshold (before any monitor declared the old one dead) or within it."""
from __future__ import annotations

import time

import pytest

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.state.connection import server_time_ms
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.registry import get_registry
from tests import fault_jobs  # noqa: F401  (the client routes these by their task type)
from tests.conftest import dump_logs
from tests.faults_support import INCLUDE, tally

STALE_MS = 3000


@pytest.fixture
def shared_config():
    return {"distributed": {
        "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
        "heartbeat": {"intervalMs": 500, "staleThresholdMs": STALE_MS, "recoveryEnabled": True,
                      "pingTimeoutMs": 500},
    }}


@pytest.fixture
def runlog(tmp_path):
    return tmp_path / "runs.jsonl"


def restart(workers, worker_id, runlog, old_instance):
    """Start ``worker_id`` again and wait until its new incarnation is registered and consuming."""
    w = workers.start(worker_id, queues=["build"], concurrency=2, include=INCLUDE, wait=False,
                      env={"FAULTS_RUNLOG": str(runlog)})
    reg = get_registry()

    def ready():
        if not w.alive():
            raise RuntimeError(f"{worker_id} exited:\n{w.log()[-3000:]}")
        info = reg.get(worker_id)
        return info is not None and info["instance"] != old_instance and w.log().count("ready.") >= 2
    wait_for(ready, 45, message=f"{worker_id} to come back")
    return w


@pytest.mark.parametrize("after_last_beat_ms", [STALE_MS + 1500, 300], ids=["after-stale", "within-stale"])
def test_kill9_and_restart_under_the_same_id_ends_running_tasks_once(workers, celery_client, rclient, namespace,
                                                                      runlog, after_last_beat_ms):
    first = workers.start("rs-a", queues=["build"], concurrency=2, include=INCLUDE,
                          env={"FAULTS_RUNLOG": str(runlog)})
    jobs = [celery_client.send_task("tests.faults.work", kwargs={"n": i, "seconds": 3}) for i in range(2)]
    wait_for(lambda: tally(runlog)["starts"] == 2, 30, message="both tasks to start")
    old = get_registry().get("rs-a")
    first.kill9()
    last_beat = int(rclient.zscore(f"{namespace}workers", "rs-a"))
    wait_for(lambda: server_time_ms(rclient) - last_beat >= after_last_beat_ms, 15, interval=0.02,
             message="the chosen moment after the last beat")
    assert get_registry().get("rs-a")["instance"] == old["instance"]  # nobody declared it dead meanwhile
    second = restart(workers, "rs-a", runlog, old["instance"])

    done = [job.get(timeout=60) for job in jobs]
    time.sleep(1.0)
    t = tally(runlog)
    logs = dump_logs([first, second])
    assert {d["worker"] for d in done} == {"rs-a"}
    assert t["ended"] == {job.id for job in jobs} and not t["twice"], logs
    assert t["starts"] == 4 and t["ends"] == 2  # killed once, run again once
    (event,) = read_events(rclient, namespace, 10)
    assert event["instance"] == old["instance"] and event["worker"] == "rs-a"
    assert {task["id"] for task in event["tasks_recovered"]} == {job.id for job in jobs}
    assert "restarted under the same worker id" in event["reason"]
    assert not rclient.exists(f"{namespace}tags:{old['instance']}")
    assert not rclient.hlen(f"{namespace}failover:pending")
    assert get_registry().get("rs-a").status == "online"


def test_a_task_that_stored_its_outcome_before_its_worker_died_is_not_run_again(workers, celery_client, rclient,
                                                                               namespace, runlog):
    env = {"FAULTS_RUNLOG": str(runlog)}
    doomed = workers.start("rs-d", queues=["build"], concurrency=1, include=INCLUDE, env=env)
    job = celery_client.send_task("tests.faults.store_then_die")
    wait_for(lambda: not doomed.alive(), 30, message="rs-d to die after storing the outcome")
    survivor = workers.start("rs-s", queues=["build"], concurrency=1, include=INCLUDE, env=env)
    (event,) = wait_for(lambda: read_events(rclient, namespace, 10), 30, message="rs-d's failover")
    time.sleep(1.5)
    assert event["worker"] == "rs-d" and event["tasks_recovered"] == []
    assert [t["id"] for t in event["already_finished"]] == [job.id]
    assert job.get(timeout=10) == {"done": True}
    assert tally(runlog)["ends"] == 1, dump_logs([doomed, survivor])
