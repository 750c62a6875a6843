"""Chaos, bounded: 3 real workers, 150 tasks, a kill -9 and a restart under the same WORKER_ID, then a 10 s Redis
restart (append-only on) on a private redis-server. Every task ends exactly once, SUCCESS, and no live worker is
declared dead. Prints the figures (run with -s to see them)."""
from __future__ import annotations

import re
import time

import pytest

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.registry import get_registry
from tests import fault_jobs  # noqa: F401  (the client routes these by their task type)
from tests.conftest import dump_logs
from tests.faults_support import INCLUDE, tally
from tests.private_cluster import on_private_redis, private_redis_client  # noqa: F401

TASKS = 150
IDS = ("cx-0", "cx-1", "cx-2")


@pytest.fixture
def shared_config():
    return {"distributed": {
        "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
        "heartbeat": {"intervalMs": 500, "staleThresholdMs": 3000, "recoveryEnabled": True, "pingTimeoutMs": 1000},
    }}



def start(workers, worker_id):
    return workers.start(worker_id, queues=["build"], concurrency=2, include=INCLUDE, wait=False)


@pytest.mark.timeout(170)
def test_chaos_kill9_same_id_restart_and_a_redis_restart(workers, celery_client, private_redis, rclient, namespace,
                                                         runlog):
    procs = {wid: start(workers, wid) for wid in IDS}
    for p in procs.values():
        workers.wait_ready(p)
    began = time.monotonic()
    results = [celery_client.send_task("tests.faults.work", kwargs={"n": i, "seconds": 0.3 + (i % 5) / 10})
               for i in range(TASKS)]

    # 1. kill -9 a worker in the middle of its tasks, and start it again under the same id at once
    wait_for(lambda: tally(runlog)["ends"] >= 15, 60, message="15 tasks to finish")
    wait_for(lambda: [e for e in tally(runlog)["entries"] if e["worker"] == "cx-1"], 30, message="cx-1 to run one")
    old, old_incarnation = get_registry().get("cx-1")["instance"], get_registry().get("cx-1")["incarnation"]
    killed = procs["cx-1"]
    killed.kill9()
    procs["cx-1"] = restarted = start(workers, "cx-1")
    wait_for(lambda: restarted.log().count("ready.") >= 1 and get_registry().get("cx-1")["instance"] != old, 45,
             message="cx-1 to come back")

    # 2. Redis goes away for 10 s and comes back with its append-only file
    wait_for(lambda: tally(runlog)["ends"] >= 50, 60, message="50 tasks to finish")
    unfinished = TASKS - len(tally(runlog)["ended"])
    private_redis.stop()
    down_at = time.monotonic()
    time.sleep(10)
    private_redis.start()
    down_s = time.monotonic() - down_at

    wait_for(lambda: len(tally(runlog)["ended"]) == TASKS, 100, message="every task to finish")
    states = [r.get(timeout=60, propagate=False) and r.state for r in results]
    elapsed = time.monotonic() - began
    time.sleep(1.5)  # a few more monitor passes
    t = tally(runlog)
    events = read_events(rclient, namespace, 10)
    given_back = sum(len(e["tasks_recovered"]) for e in events)
    logs = dump_logs([killed, *procs.values()])
    print(f"\nchaos: {TASKS} tasks on {len(IDS)} workers in {elapsed:.1f}s; kill -9 + same-id restart of cx-1; "
          f"Redis down {down_s:.1f}s with AOF and {unfinished} unfinished; {len(events)} failover event(s), "
          f"{given_back} given back; {t['starts']} starts, {t['ends']} ends, {len(t['twice'])} ran twice, "
          f"{sum(1 for s in states if s != 'SUCCESS')} not SUCCESS")

    assert t["ended"] == {r.id for r in results} and not t["twice"], logs
    assert states.count("SUCCESS") == TASKS, logs
    # the one failover: the killed incarnation of cx-1, recovered for its restart; nobody else declared dead
    assert [(e["worker"], e["instance"]) for e in events] == [("cx-1", old)], (events, logs)
    assert {w.id: w.status for w in get_registry().workers()} == {wid: "online" for wid in IDS}
    # the killed incarnation may be declared dead by the connection watch (its process is gone); nobody else
    declared = [line for p in procs.values() for line in p.log().splitlines()
                if re.search(r"\) declared dead:|was declared dead", line)]
    assert all(f"worker cx-1 (incarnation {old_incarnation}) declared dead: its process is gone" in line
               for line in declared), declared
