"""A worker killed the moment Redis hands it a message: the message is not lost.

kombu's Redis consumer takes a message with BRPOP and only then, in a second round trip, records it in
``unacked``. A worker killed between the two loses the message for good (it is in no queue and in no
``unacked`` entry); a kill -9 that follows a task's end by a few milliseconds — when the worker takes
the next waiting message — lands there. Here the fault is made exact: the worker reaches Redis through
a forwarder that, when the reply carrying the watched task reaches it, kills the worker's process group
and drops the reply. Another worker must then run that task, once.
"""
from __future__ import annotations

import threading

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.state.failovers import read_events
from tests import fault_jobs  # noqa: F401  (the client routes these by their task type)
from tests.conftest import dump_logs
from tests.faults_support import INCLUDE, tally
from tests.private_cluster import on_private_redis, private_redis_client  # noqa: F401
from tests.private_redis import NetworkCut


def hand_over(workers, celery_client, runlog, forwarder: NetworkCut, worker_id: str, fault):
    """Start ``worker_id`` behind ``forwarder`` with one slot, keep it busy, queue the watched task, and run
    ``fault(worker)`` instead of passing on the reply that hands the watched task to it. Returns (worker, busy, watched)."""
    via = f"redis://127.0.0.1:{forwarder.port}/0"
    proc = workers.start(worker_id, queues=["build"], concurrency=1, include=INCLUDE, env={"REDIS_URL": via},
                         extra=["--prefetch-multiplier", "1"])
    busy = celery_client.send_task("tests.faults.work", kwargs={"n": 0, "seconds": 2})
    wait_for(lambda: [e for e in tally(runlog)["entries"] if e["id"] == busy.id], 30, message=f"{worker_id} to start")
    # waits in the queue while the one slot is taken; the worker takes it when the first task ends
    watched = celery_client.send_task("tests.faults.work", kwargs={"n": 1, "seconds": 0.1})
    sprung = threading.Event()

    def spring():
        fault(proc)
        sprung.set()

    forwarder.trap(watched.id.encode(), spring)
    wait_for(sprung.is_set, 30, message=f"{worker_id}'s fetch of the watched task")
    return proc, busy, watched


@pytest.mark.timeout(120)
def test_worker_killed_as_its_fetch_reply_arrives_loses_no_message(workers, celery_client, private_redis, rclient,
                                                                     namespace, runlog):
    with NetworkCut(private_redis.port) as forwarder:
        doomed, busy, watched = hand_over(workers, celery_client, runlog, forwarder, "fw-a", lambda w: w.kill9())
        assert busy.get(timeout=10) == {"n": 0, "worker": "fw-a"}
        assert not [e for e in tally(runlog)["entries"] if e["id"] == watched.id]  # it never reached fw-a

        rescuer = workers.start("fw-b", queues=["build"], concurrency=1, include=INCLUDE)
        logs = lambda: dump_logs([doomed, rescuer])  # noqa: E731
        try:
            assert watched.get(timeout=45) == {"n": 1, "worker": "fw-b"}, logs()
        except CeleryTimeout:
            pytest.fail(f"the task fw-a was handed as it died never ran again:\n{logs()}")
        assert [e["worker"] for e in tally(runlog)["entries"] if e["id"] == watched.id and e["phase"] == "end"] \
            == ["fw-b"]
        events = read_events(rclient, namespace, 5)
        assert [e["worker"] for e in events] == ["fw-a"], events
        assert watched.id in [t["id"] for t in events[0]["tasks_recovered"]], events


@pytest.mark.timeout(120)
def test_connection_dropped_as_the_fetch_reply_arrives_the_worker_gives_the_message_back(
        workers, celery_client, private_redis, rclient, namespace, runlog):
    """Redis took the message and recorded it under the worker, but the reply never reached the worker (the
    network dropped every connection at that moment). The worker, alive, finds it among its tags and runs it."""
    with NetworkCut(private_redis.port) as forwarder:
        def blip(_worker):
            forwarder.cut()
            forwarder.restore()

        proc, busy, watched = hand_over(workers, celery_client, runlog, forwarder, "fw-c", blip)
        try:
            assert watched.get(timeout=45) == {"n": 1, "worker": "fw-c"}
        except CeleryTimeout:
            pytest.fail(f"the task whose fetch reply was lost never ran:\n{dump_logs([proc])}")
        assert busy.get(timeout=10) == {"n": 0, "worker": "fw-c"}
        ends = [e["id"] for e in tally(runlog)["entries"] if e["phase"] == "end"]
        assert sorted(ends) == sorted([busy.id, watched.id]), ends
        assert read_events(rclient, namespace, 5) == []  # nobody was failed over: the worker was alive
