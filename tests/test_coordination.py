"""Coordination patterns with real workers: master_worker and hierarchical assignment."""
import json

import pytest

from sentinel_celery.broker.redis_queues import BrokerQueues
from sentinel_celery.cluster.coordination import ASSIGNMENTS, Dispatcher, leaderless_fallback, message_kwargs
from sentinel_celery.config import load_config
from sentinel_celery.routing import coordinator_queue_name, direct_queue_name
from sentinel_celery.state.memory import shared_memory
from sentinel_celery.state.registry import get_registry
from tests.fakes import fake_worker

BASE = {
    "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
    "heartbeat": {"intervalMs": 300, "staleThresholdMs": 1500, "recoveryEnabled": True},
    "loadBalancer": {"strategy": "least_loaded", "rebalanceIntervalMs": 500},
    "coordination": {"dispatchIntervalMs": 100},
}


def pattern(name):
    return {"distributed": {**BASE, "coordination": {**BASE["coordination"], "pattern": name}}}


def runs(rclient, namespace):
    return [json.loads(r) for r in rclient.lrange(f"{namespace}test:runs", 0, -1)]


@pytest.mark.parametrize("shared_config", [pattern("master_worker")])
def test_client_routes_to_the_coordinator_queue_under_master_worker(celery_client):
    r = celery_client.send_task("tests.record", args=["c"], kwargs={"project_id": "p7"}, job_type="build")
    (msg,) = BrokerQueues(celery_client).peek(coordinator_queue_name("build"))
    assert msg.task_id == r.id and msg.properties["sentinel_home"] == "sentinel.coord.build"
    assert message_kwargs(msg.message) == {"project_id": "p7"}
    # an explicit per-call strategy bypasses the coordinator
    celery_client.send_task("tests.record", args=["p"], job_type="build", balance="pull")
    assert BrokerQueues(celery_client).depth("build") == 1


@pytest.mark.parametrize("shared_config", [pattern("master_worker")])
def test_master_assigns_every_task_to_a_worker_with_room_and_records_it(workers, celery_client, rclient,
                                                                        namespace):
    a = workers.start("m-a", queues=["build"], concurrency=1, wait=False)
    b = workers.start("m-b", queues=["build"], concurrency=2, wait=False)
    workers.wait_ready(a), workers.wait_ready(b)
    results = [celery_client.send_task("tests.record", args=[f"t{i}"], kwargs={"sleep": 0.4}) for i in range(6)]
    done = {r.id: r.get(timeout=45)["worker"] for r in results}
    assignments = shared_memory(load_config()).list(ASSIGNMENTS)
    assert set(assignments) == set(done)
    leader = {v["by"] for v in assignments.values()}
    assert len(leader) == 1 and leader <= {"m-a", "m-b"}
    for task_id, worker in done.items():
        assert assignments[task_id]["worker"] == worker  # each ran where the master put it
    recorded = runs(rclient, namespace)
    assert sorted(r["tag"] for r in recorded) == [f"t{i}" for i in range(6)]
    assert {r["worker"] for r in recorded} == {"m-a", "m-b"}
    assert BrokerQueues(celery_client).depth(coordinator_queue_name("build")) == 0


@pytest.mark.parametrize("shared_config", [pattern("hierarchical")])
def test_group_leader_assigns_only_within_its_group(workers, celery_client, rclient, namespace):
    lead = workers.start("h-lead", queues=["build"], concurrency=1, wait=False,
                         env={"WORKER_GROUP": "g1", "WORKER_ROLE": "leader"})
    follower = workers.start("h-follow", queues=["build"], concurrency=2, wait=False, env={"WORKER_GROUP": "g1"})
    outsider = workers.start("h-out", queues=["build"], concurrency=2, wait=False, env={"WORKER_GROUP": "g2"})
    for w in (lead, follower, outsider):
        workers.wait_ready(w)
    assert get_registry().get("h-lead")["metadata"]["role"] == "leader"
    results = [celery_client.send_task("tests.record", args=[f"h{i}"], kwargs={"sleep": 0.3}) for i in range(6)]
    done = {r.id: r.get(timeout=45)["worker"] for r in results}
    assert set(done.values()) == {"h-lead", "h-follow"}  # g2 has no leader: nobody assigns to it
    assignments = shared_memory(load_config()).list(ASSIGNMENTS)
    assert {v["by"] for v in assignments.values()} == {"h-lead"}
    assert sorted(r["tag"] for r in runs(rclient, namespace)) == [f"h{i}" for i in range(6)]


@pytest.mark.parametrize("shared_config", [pattern("hierarchical")])
def test_a_type_no_leader_can_place_falls_back_to_its_type_queue(celery_client):
    fake_worker("lead", slots=2, types=("build",), metadata={"role": "leader", "group": "g"})
    fake_worker("deployer", slots=2, types=("deploy",), metadata={"group": "other"})
    build = celery_client.send_task("tests.record", args=["b"], job_type="build")
    deploy = celery_client.send_task("tests.record", args=["d"], job_type="deploy")
    cfg = load_config()
    assert leaderless_fallback(celery_client, cfg, get_registry(cfg).workers()) == 1
    broker = BrokerQueues(celery_client)
    assert [m.task_id for m in broker.peek(coordinator_queue_name("build"))] == [build.id]  # its leader places it
    assert [m.task_id for m in broker.peek("deploy")] == [deploy.id]


@pytest.mark.parametrize("shared_config", [pattern("master_worker")])
def test_dispatcher_places_by_strategy_and_affinity_and_leaves_the_rest_waiting(celery_client):
    fake_worker("d1", slots=1)
    fake_worker("d2", slots=2)
    cfg = load_config(overrides={"distributed.loadBalancer.strategy": "affinity"})
    ids = [celery_client.send_task("tests.record", args=[i], kwargs={"project_id": "same"}, job_type="build").id
           for i in range(5)]
    dispatcher = Dispatcher(celery_client, cfg, assigner="test")
    assert dispatcher.dispatch_once() == 3           # three free slots in all
    broker = BrokerQueues(celery_client)
    assert broker.depth(coordinator_queue_name("build")) == 2
    on_d1 = broker.peek(direct_queue_name("d1"))
    on_d2 = broker.peek(direct_queue_name("d2"))
    # affinity: the first goes by the fallback (least_loaded: d2 has more room), the next sticks to d2
    assert [m.task_id for m in on_d2] == ids[:2] and [m.task_id for m in on_d1] == [ids[2]]
    for m in on_d1 + on_d2:  # restored or retried, a task goes back to the coordinator
        assert m.properties["delivery_info"]["routing_key"] == "sentinel.coord.build"
    assignments = shared_memory(cfg).list(ASSIGNMENTS)
    assert {k: v["worker"] for k, v in assignments.items()} == {ids[0]: "d2", ids[1]: "d2", ids[2]: "d1"}
    assert dispatcher.dispatch_once() == 0           # everyone is full now: the rest keeps waiting


@pytest.mark.parametrize("shared_config", [pattern("hierarchical")])
def test_without_any_group_leader_coordinator_queues_fall_back_to_pull(celery_client):
    results = [celery_client.send_task("tests.record", args=[f"x{i}"]) for i in range(3)]
    broker = BrokerQueues(celery_client)
    assert broker.depth(coordinator_queue_name("build")) == 3
    cfg = load_config()
    moved = leaderless_fallback(celery_client, cfg, get_registry(cfg).workers())
    assert moved == 3 and broker.depth(coordinator_queue_name("build")) == 0
    assert [m.task_id for m in broker.peek("build")] == [r.id for r in results]
