"""Registry entries without a process behind them, for strategy and coordination tests."""
from sentinel_celery.config import load_config
from sentinel_celery.routing import direct_queue_name
from sentinel_celery.state.registry import get_registry
from sentinel_celery.worker.queues import direct_queues_key


def fake_worker(wid, *, slots, types=("build",), active=0, reserved=0, cpu=1, memory=1024, direct=True,
                metadata=None):
    """A registry entry as a worker writes it, without a process behind it."""
    reg = get_registry()
    queues = [*types, *([direct_queue_name(wid)] if direct else [])]
    reg.register(wid, f"inst-{wid}", {"nodename": f"{wid}@test", "queues": queues, "metadata": metadata or {},
                                      "capacity": {"maxConcurrentTasks": slots, "cpuCores": cpu, "memoryMb": memory,
                                                   "supportedTaskTypes": list(types)},
                                      "concurrency": slots})
    reg.beat(wid, f"inst-{wid}", {"active": active, "reserved": max(active, reserved), "concurrency": slots})
    if direct:
        reg.client.sadd(direct_queues_key(load_config().namespace), wid)
