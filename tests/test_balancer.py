"""Load balancing: strategy math against a real Redis registry, rebalancing, and real workers."""
import json

import pytest
from click.testing import CliRunner

from sentinel_celery.broker.redis_queues import BrokerQueues
from sentinel_celery.cli import main
from sentinel_celery.cluster.balancer import Balancer, LoadView
from sentinel_celery.cluster.rebalance import rebalance
from sentinel_celery.config import load_config
from sentinel_celery.routing import direct_queue_name
from sentinel_celery.state.registry import get_registry
from tests.fakes import fake_worker

FAST = {
    "distributed": {
        "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
        "heartbeat": {"intervalMs": 300, "staleThresholdMs": 1500, "recoveryEnabled": True},
        "loadBalancer": {"rebalanceIntervalMs": 500},
    }
}


@pytest.fixture
def shared_config():
    return FAST


def balancer(app, ttl=60.0, **lb):
    options = lb.pop("options", {})
    overrides = {f"distributed.loadBalancer.{k}": v for k, v in lb.items()}
    overrides.update({f"distributed.loadBalancer.options.{k}": v for k, v in options.items()})
    cfg = load_config(overrides=overrides)
    b = Balancer(app, cfg)
    b._view = LoadView(get_registry(cfg), BrokerQueues(app), ttl)
    return b


def place(b, n=1, kwargs=None, options=None):
    out = []
    for _ in range(n):
        route = b("tests.record", "build", (), dict(kwargs or {}), dict(options or {}))
        out.append(route["routing_key"].removeprefix("sentinel.direct.") if route else None)
    return out


def test_pull_keeps_the_type_queue_and_balancing_uses_a_direct_queue(celery_client):
    fake_worker("wa", slots=2)
    broker = BrokerQueues(celery_client)
    celery_client.send_task("tests.record", args=["pulled"], job_type="build")
    placed = celery_client.send_task("tests.record", args=["placed"], job_type="build", balance="least_loaded")
    assert [m.task_id for m in broker.peek("build")] != [] and broker.depth("build") == 1
    (msg,) = broker.peek(direct_queue_name("wa"))
    assert msg.task_id == placed.id
    assert msg.properties["sentinel_home"] == "build"
    assert "balance" not in msg.properties  # the per-call option is consumed by the router
    assert direct_queue_name("wa") == "sentinel.direct.wa"


def test_unknown_strategy_is_refused(celery_client):
    with pytest.raises(ValueError, match="not a load-balancing strategy"):
        celery_client.send_task("tests.record", args=["x"], job_type="build", balance="fastest")


def test_round_robin_rotates_in_id_order_from_start_index(celery_client):
    for wid in ("w1", "w2", "w3"):
        fake_worker(wid, slots=10)
    b = balancer(celery_client, strategy="round_robin", options={"startIndex": 1})
    assert place(b, 7) == ["w2", "w3", "w1", "w2", "w3", "w1", "w2"]


def test_least_loaded_absolute_or_relative_to_capacity(celery_client):
    fake_worker("small", slots=2, active=1)    # 1 running, 50% busy
    fake_worker("big", slots=8, active=2)      # 2 running, 25% busy
    assert place(balancer(celery_client, strategy="least_loaded", options={"considerCapacity": False})) == ["small"]
    assert place(balancer(celery_client, strategy="least_loaded", options={"considerCapacity": True})) == ["big"]


def test_capacity_based_weights_free_slots_by_cpu_and_memory(celery_client):
    fake_worker("many-slots", slots=4, cpu=1, memory=1024)
    fake_worker("fast-cpu", slots=2, cpu=8, memory=1024)
    fake_worker("big-mem", slots=2, cpu=1, memory=16384)
    assert place(balancer(celery_client, strategy="capacity_based")) == ["many-slots"]
    assert place(balancer(celery_client, strategy="capacity_based", options={"weightByCpu": True})) == ["fast-cpu"]
    assert place(balancer(celery_client, strategy="capacity_based",
                          options={"weightByMemory": True})) == ["big-mem"]


@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded", "capacity_based"])
def test_a_burst_fills_free_slots_by_capacity_then_stays_on_the_type_queue(celery_client, strategy):
    fake_worker("c1", slots=1)
    fake_worker("c2", slots=2)
    fake_worker("c4", slots=4, active=1)  # 3 free
    chosen = place(balancer(celery_client, strategy=strategy), 9)
    counts = {w: chosen.count(w) for w in set(chosen)}
    assert counts == {"c1": 1, "c2": 2, "c4": 3, None: 3}


def test_waiting_direct_queue_counts_as_load(celery_client):
    fake_worker("q1", slots=2)
    fake_worker("q2", slots=2)
    b = balancer(celery_client, strategy="least_loaded", ttl=0)  # re-read every time: no local memory
    for _ in range(2):
        celery_client.send_task("tests.record", args=["w"], job_type="build", queue=direct_queue_name("q1"))
    # q1 is full with what waits for it; q2 gets two, then counts as full with what we placed
    assert place(b, 3) == ["q2", "q2", None]
    assert BrokerQueues(celery_client).depth(direct_queue_name("q1")) == 2


def test_only_online_workers_of_the_type_with_a_direct_queue_and_room_qualify(celery_client, rclient, namespace):
    fake_worker("other-type", slots=4, types=("test",))
    fake_worker("old-version", slots=4, direct=False)
    fake_worker("full", slots=2, active=2)
    fake_worker("stale", slots=4)
    rclient.zadd(f"{namespace}workers", {"stale": 1})  # last beat long ago
    fake_worker("draining", slots=4)
    get_registry().set_state("draining", "draining")
    assert place(balancer(celery_client, strategy="least_loaded"), 3) == [None, None, None]
    fake_worker("ok", slots=1)
    assert place(balancer(celery_client, strategy="least_loaded"), 2) == ["ok", None]


def test_affinity_sticks_keeps_the_key_while_full_and_moves_it_when_the_worker_is_gone(
        celery_client, rclient, namespace):
    fake_worker("a", slots=2)
    fake_worker("b", slots=5)
    b = balancer(celery_client, strategy="affinity", options={"affinityKey": "project_id",
                                                              "fallbackStrategy": "round_robin"})
    key = f"{namespace}balancer:affinity:build:p1"
    assert place(b, 1, kwargs={"project_id": "p1"}) == ["a"]      # no preference yet: fallback (cursor 0)
    assert rclient.get(key) == "a" and 0 < rclient.ttl(key) <= 3600
    assert place(b, 1, kwargs={"project_id": "p1"}) == ["a"]      # sticky, although b is emptier
    assert place(b, 1, kwargs={"project_id": "p1"}) == ["b"]      # a is full: fallback, the key stays
    assert rclient.get(key) == "a"
    assert place(b, 1, kwargs={"project_id": "p2"}) == ["b"]      # another key
    assert place(b, 1, options={"affinity": "p1"}) == ["b"]       # explicit per-call value, a still full
    assert place(b, 1, kwargs={}) == ["b"]                        # no key at all: fallback
    get_registry().forget("a")                                    # a is gone
    b.view.invalidate()
    assert place(b, 1, kwargs={"project_id": "p1"}) == ["b"]
    assert rclient.get(key) == "b"                                # the key moved with it


def test_rebalance_sends_home_what_waits_on_gone_stale_or_overloaded_workers(celery_client, rclient, namespace):
    cfg = load_config()
    broker = BrokerQueues(celery_client)
    fake_worker("gone", slots=4)
    fake_worker("busy", slots=1, active=1)
    fake_worker("fine", slots=4)
    sent = {}
    for wid, n in (("gone", 3), ("busy", 2), ("fine", 1)):
        sent[wid] = [celery_client.send_task("tests.record", args=[f"{wid}-{i}"], job_type="build",
                                             queue=direct_queue_name(wid)).id for i in range(n)]
    get_registry().deregister("gone", "inst-gone")
    report = rebalance(celery_client, cfg)
    assert report.moved == {"gone": 3, "busy": 2}
    assert report.reasons["gone"] == "gone" and report.reasons["busy"].startswith("overloaded")
    home = broker.peek("build")
    assert sorted(m.task_id for m in home) == sorted(sent["gone"] + sent["busy"])
    # order kept per source: the first sent to 'gone' is consumed first among them
    gone_order = [m.task_id for m in home if m.task_id in sent["gone"]]
    assert gone_order == sent["gone"]
    for m in home:
        assert m.properties["delivery_info"] == {"exchange": "", "routing_key": "build"}
        assert m.properties["sentinel_home"] == "build"
    assert broker.depth(direct_queue_name("gone")) == broker.depth(direct_queue_name("busy")) == 0
    assert broker.depth(direct_queue_name("fine")) == 1
    assert rebalance(celery_client, cfg).moved == {}                        # nothing more to do
    assert "gone" not in rclient.smembers(f"{namespace}balancer:direct-queues")


# -- real workers -------------------------------------------------------------------------------------
def runs(rclient, namespace):
    return [json.loads(r) for r in rclient.lrange(f"{namespace}test:runs", 0, -1)]


def test_workers_consume_their_direct_queue_and_placement_follows_capacity(workers, celery_client, rclient,
                                                                         namespace):
    w1 = workers.start("rw1", queues=["build"], concurrency=1, wait=False)
    w2 = workers.start("rw2", queues=["build"], concurrency=2, wait=False)
    workers.wait_ready(w1), workers.wait_ready(w2)
    assert direct_queue_name("rw1") in get_registry().get("rw1")["queues"]
    results = [celery_client.send_task("tests.record", args=[f"t{i}"], kwargs={"sleep": 1.0},
                                       balance="capacity_based") for i in range(3)]
    done = [r.get(timeout=30) for r in results]
    by_worker = sorted(d["worker"] for d in done)
    assert by_worker == ["rw1", "rw2", "rw2"]
    placements = Balancer(celery_client, load_config()).placements()
    assert placements == {"rw1": 1, "rw2": 2}
    out = CliRunner().invoke(main, ["cluster", "load-distribution", "--json"])
    assert out.exit_code == 0, out.output
    dist = json.loads(out.output)
    assert [(w["id"], w["slots"], w["placed"], w["waiting"]) for w in dist["workers"]] == [
        ("rw1", 1, 1, 0), ("rw2", 2, 2, 0)]
    assert "DIRECT WAITING" in CliRunner().invoke(main, ["cluster", "load-distribution"]).output


def test_a_dead_workers_direct_queue_is_rerouted_and_runs_once(workers, celery_client, rclient, namespace):
    fake_worker("ghost", slots=4)
    results = [celery_client.send_task("tests.record", args=[f"g{i}"], balance="least_loaded") for i in range(3)]
    broker = BrokerQueues(celery_client)
    assert broker.depth(direct_queue_name("ghost")) == 3
    # the ghost never beats again; a real worker comes up, its coordination thread leads and rebalances
    rescuer = workers.start("rescuer", queues=["build"], concurrency=2)
    assert sorted(r.get(timeout=30)["tag"] for r in results) == ["g0", "g1", "g2"]
    recorded = runs(rclient, namespace)
    assert sorted(r["tag"] for r in recorded) == ["g0", "g1", "g2"]  # each exactly once
    assert {r["worker"] for r in recorded} == {"rescuer"}
    assert broker.depth(direct_queue_name("ghost")) == 0
    assert "moved 3 waiting task(s) from ghost (stale) back to build" in rescuer.log()
