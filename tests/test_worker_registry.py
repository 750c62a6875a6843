"""Real worker processes: routing by type and -Q, registry entries, heartbeats, deregistration."""
import sys

import pytest

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.routing import UnknownTaskType
from sentinel_celery.state.registry import get_registry

PY_OK = [sys.executable, "-c", "print('compiled ok')"]


def test_type_routes_to_the_queue_of_the_worker_that_runs_it(workers, celery_client):
    workers.start("wb", queues=["build"], concurrency=1)
    workers.start("wt", queues=["test"], concurrency=1)
    build = celery_client.send_task("workers.build.run", kwargs={"argv": PY_OK})
    test = celery_client.send_task("workers.test.run", kwargs={"argv": PY_OK})
    assert build.get(timeout=30)["worker"] == "wb"
    assert test.get(timeout=30)["worker"] == "wt"
    assert build.get()["output_tail"] == "compiled ok"
    assert build.get()["exit_code"] == 0


def test_unknown_type_is_refused_at_send_time(celery_client):
    with pytest.raises(UnknownTaskType, match="configured task types"):
        celery_client.send_task("anything", job_type="release")


def test_worker_without_Q_consumes_its_supported_types(workers, celery_client):
    workers.start("wd", env={"SUPPORTED_TASK_TYPES": "deploy", "WORKER_MAX_TASKS": "3"})
    info = get_registry().get("wd")
    assert "deploy" in info["queues"] and "build" not in info["queues"]
    assert info["concurrency"] == 3
    r = celery_client.send_task("workers.deploy.run", kwargs={"argv": PY_OK, "environment": "staging"})
    out = r.get(timeout=30)
    assert out["worker"] == "wd" and out["lease_token"] >= 1


def test_registry_entry_beats_and_disappears_on_warm_shutdown(workers, rclient, namespace):
    w = workers.start("wr", queues=["build"], concurrency=2, env={"WORKER_REGION": "eu-west"})
    reg = get_registry()
    info = reg.get("wr")
    assert info.status == "online"
    assert info["metadata"]["region"] == "eu-west"
    assert info["pid"] == w.pid
    assert info["incarnation"] >= 1
    first = rclient.zscore(f"{namespace}workers", "wr")
    wait_for(lambda: rclient.zscore(f"{namespace}workers", "wr") > first, 5, message="a newer heartbeat")
    assert w.stop(timeout=20) == 0
    assert reg.get("wr") is None
    assert rclient.zscore(f"{namespace}workers", "wr") is None


def test_second_worker_with_a_live_id_refuses_to_start(workers):
    workers.start("dup", queues=["build"], concurrency=1)
    second = workers.start("dup", queues=["build"], concurrency=1, wait=False)
    wait_for(lambda: not second.alive(), 45, message="the duplicate to exit")
    assert second.proc.returncode != 0
    assert "already in use by a live worker" in second.log()


def test_failed_job_carries_output_tail(workers, celery_client):
    workers.start("wf", queues=["build"], concurrency=1)
    r = celery_client.send_task("workers.build.run",
                                kwargs={"argv": [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]})
    with pytest.raises(Exception) as info:
        r.get(timeout=30)
    assert type(info.value).__name__ == "JobFailed"
    assert "exit code 3" in str(info.value) and "boom" in str(info.value)
    wait_for(lambda: get_registry().get("wf")["failed"] == 1, 5, message="failed counter")


def test_job_timeout_kills_the_command(workers, celery_client):
    workers.start("wto", queues=["build"], concurrency=1)
    r = celery_client.send_task("workers.build.run",
                                kwargs={"argv": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout": 1})
    with pytest.raises(Exception, match="timed out after 1s"):
        r.get(timeout=30)
