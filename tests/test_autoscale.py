"""Auto-scaling: the policy on synthetic load, the scalers, and draining real workers."""
import json
import sys
import time

import pytest
from click.testing import CliRunner

from sentinel_celery.broker.redis_queues import BrokerQueues
from sentinel_celery.cli import main
from sentinel_celery.cluster.autoscale import (
    AutoscaleDuty,
    Autoscaler,
    CommandScaler,
    Decision,
    Load,
    LocalScaler,
    NoneScaler,
    Policy,
    evaluate,
)
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import load_config
from sentinel_celery.state.registry import get_registry

P = Policy(min_workers=1, max_workers=6, up_utilization=0.80, up_queued=50, down_utilization=0.20,
           down_queued=10, step=2, cooldown_seconds=60)


@pytest.mark.parametrize("load, expected", [
    (Load(workers=2, slots=8, running=8, queued=51), ("up", 4)),         # busy and a backlog
    (Load(workers=2, slots=8, running=8, queued=50), ("hold", 2)),       # queued must exceed 50
    (Load(workers=2, slots=8, running=6, queued=500), ("hold", 2)),      # 0.75 is not > 0.80
    (Load(workers=5, slots=20, running=20, queued=99), ("up", 6)),       # capped at maxWorkers
    (Load(workers=6, slots=24, running=24, queued=99), ("hold", 6)),     # already at maxWorkers
    (Load(workers=4, slots=16, running=3, queued=9), ("down", 2)),       # idle and little queued
    (Load(workers=4, slots=16, running=3, queued=10), ("hold", 4)),      # queued must be below 10
    (Load(workers=2, slots=8, running=0, queued=0), ("down", 1)),        # floored at minWorkers
    (Load(workers=1, slots=4, running=0, queued=0), ("hold", 1)),
    (Load(workers=0, slots=0, running=0, queued=0), ("up", 1)),          # below minWorkers
    (Load(workers=8, slots=32, running=32, queued=999), ("down", 6)),    # above maxWorkers
])
def test_policy(load, expected):
    d = evaluate(load, P, now=1000.0)
    assert (d.action, d.desired) == expected, d.reason


def test_cooldown_holds_but_bounds_do_not_wait():
    busy = Load(workers=2, slots=8, running=8, queued=100)
    held = evaluate(busy, P, now=1000.0, last_change=970.0)
    assert held.action == "hold" and "cooldown for 30s" in held.reason and "up to 4" in held.reason
    assert evaluate(busy, P, now=1000.0, last_change=939.0).action == "up"
    assert evaluate(Load(0, 0, 0, 0), P, now=1000.0, last_change=999.0).action == "up"


class Synthetic(Autoscaler):
    """An autoscaler fed a load instead of measuring the cluster."""

    def __init__(self, app, cfg, loads, **kw):
        super().__init__(app, cfg, **kw)
        self.loads = list(loads)

    def measure(self):
        return self.loads.pop(0), []


def test_autoscaler_publishes_the_desired_count_and_respects_cooldown(celery_client, rclient, namespace):
    clock = [1000.0]
    auto = Synthetic(celery_client, load_config(), [Load(2, 8, 8, 80), Load(4, 16, 16, 80), Load(4, 16, 16, 80)],
                     scaler=NoneScaler(), policy=P, clock=lambda: clock[0])
    assert auto.tick(fence=5).desired == 4
    assert rclient.get(f"{namespace}autoscale:desired") == "4"
    status = rclient.hgetall(f"{namespace}autoscale:status")
    assert status["action"] == "up" and status["fence"] == "5" and status["last_change"] == "1000.0"
    clock[0] = 1030.0
    assert auto.tick(fence=5).action == "hold"            # cooldown
    clock[0] = 1061.0
    auto.tick(fence=4)                                    # an older leader's write is dropped
    assert rclient.hget(f"{namespace}autoscale:status", "at") == "1030.0"
    assert rclient.get(f"{namespace}autoscale:desired") == "4"
    out = CliRunner().invoke(main, ["autoscale", "status", "--json"])
    assert out.exit_code == 0, out.output
    status = json.loads(out.output)
    assert status["last_decision"]["action"] == "hold" and status["last_decision"]["desired"] == "4"
    assert status["load"]["workers"] == 0 and status["would_do_now"]["action"] == "up"  # below minWorkers
    assert "policy says      up -> 1" in CliRunner().invoke(main, ["autoscale", "status"]).output


def test_command_scaler_runs_an_argv_never_a_shell(celery_client, tmp_path):
    out = tmp_path / "scaled.json"
    script = ("import json, os, sys; "
              "json.dump([sys.argv[1:], os.environ['SENTINEL_DESIRED_WORKERS']], open(sys.argv[1], 'w'))")
    scaler = CommandScaler([sys.executable, "-c", script, str(out), "--replicas={desired}", "; rm -rf /"])
    auto = Synthetic(celery_client, load_config(), [Load(2, 8, 8, 80)], scaler=scaler, policy=P)
    assert auto.tick().desired == 4
    argv, env = json.loads(out.read_text())
    assert argv == [str(out), "--replicas=4", "; rm -rf /"] and env == "4"
    failing = Synthetic(celery_client, load_config(), [Load(2, 8, 8, 80)], policy=P,
                        scaler=CommandScaler([sys.executable, "-c", "import sys; sys.exit(3)"]),
                        clock=lambda: time.time() + 3600)  # past the first change's cooldown
    failing.tick()
    assert "exited 3" in failing.status()["error"]


def test_local_scaler_starts_and_drains_real_worker_processes(celery_client, sentinel_env, tmp_path):
    cfg = load_config(overrides={"distributed.autoscale.local.include": ["tests.jobs"],
                                 "distributed.autoscale.local.queues": ["build"],
                                 "distributed.autoscale.local.concurrency": 1,
                                 "distributed.autoscale.local.logDir": str(tmp_path),
                                 "distributed.autoscale.local.idPrefix": "auto"})
    scaler = LocalScaler(cfg)
    auto = Autoscaler(celery_client, cfg, scaler=scaler, policy=P)
    try:
        auto.apply(Decision("up", 0, 2, "test"), [])
        ids = sorted(scaler.processes)
        assert len(ids) == 2 and all(i.startswith("auto-") for i in ids)
        registry = get_registry()
        wait_for(lambda: all(registry.get(i) is not None and registry.get(i).status == "online" for i in ids), 60,
                 message="both autoscaled workers online")
        procs = dict(scaler.processes)
        online = registry.workers(include_offline=False)
        auto.apply(Decision("down", 2, 1, "test"), online)
        auto.wait_for_drains(timeout=60)
        gone = [i for i in ids if registry.get(i) is None]
        assert len(gone) == 1
        assert procs[gone[0]].proc.returncode == 0          # warm-stopped and reaped
        (kept,) = set(ids) - set(gone)
        assert procs[kept].alive() and registry.get(kept).status == "online"
    finally:
        scaler.stop_all()


def test_drain_loses_and_duplicates_nothing(workers, celery_client, rclient, namespace):
    w1 = workers.start("dr1", queues=["build"], concurrency=2)
    results = [celery_client.send_task("tests.record", args=[f"d{i}"], kwargs={"sleep": 0.5}) for i in range(12)]
    wait_for(lambda: rclient.llen(f"{namespace}test:runs") >= 2, 30, message="the first tasks to start")
    out = CliRunner().invoke(main, ["workers", "drain", "dr1", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["finished_holding"] and result["stopped"]
    wait_for(lambda: not w1.alive(), 30, message="dr1 to exit")
    assert w1.proc.returncode == 0
    ran_on_w1 = rclient.llen(f"{namespace}test:runs")
    assert BrokerQueues(celery_client).depth("build") == 12 - ran_on_w1  # the rest waits, untouched
    workers.start("dr2", queues=["build"], concurrency=2)
    assert sorted(r.get(timeout=60)["tag"] for r in results) == sorted(f"d{i}" for i in range(12))
    runs = [json.loads(r) for r in rclient.lrange(f"{namespace}test:runs", 0, -1)]
    assert sorted(r["tag"] for r in runs) == sorted(f"d{i}" for i in range(12))   # each exactly once
    assert {r["worker"] for r in runs[:ran_on_w1]} == {"dr1"}
    assert {r["worker"] for r in runs[ran_on_w1:]} == {"dr2"}


def test_only_the_holder_of_the_autoscaler_lease_scales(celery_client, rclient, namespace):
    cfg = load_config()
    first = AutoscaleDuty(celery_client, cfg, owner="a",
                          autoscaler=Synthetic(celery_client, cfg, [Load(2, 8, 8, 80)] * 2, scaler=NoneScaler(),
                                               policy=P))
    second = AutoscaleDuty(celery_client, cfg, owner="b",
                           autoscaler=Synthetic(celery_client, cfg, [Load(2, 8, 8, 80)], scaler=NoneScaler(),
                                                policy=P))
    try:
        assert first.step().desired == 4
        assert second.step() is None                       # the lease is held: b does nothing
        token = first.lease.token
        assert rclient.hget(f"{namespace}autoscale:status", "fence") == str(token)
        first.release()
        assert second.step() is not None                   # free now: b takes over, with a newer token
        assert second.lease.token > token
        assert rclient.hget(f"{namespace}autoscale:status", "fence") == str(second.lease.token)
    finally:
        first.release(), second.release()
