"""Tasks of the Redis failover test and benchmark. Each records what it did in a *witness* Redis
(``HA_WITNESS_URL``, under ``HA_WITNESS_PREFIX``) that the failover does not touch, so the record
itself cannot be lost with the primary."""
import json
import os
import time

import redis
from celery import shared_task

from sentinel_celery.config import get_config
from sentinel_celery.task import SentinelTask

_witness: redis.Redis | None = None


def witness() -> redis.Redis:
    global _witness
    if _witness is None:
        _witness = redis.Redis.from_url(os.environ["HA_WITNESS_URL"], decode_responses=True)
    return _witness


def record(**data) -> None:
    data.update(worker=get_config().worker_id, pid=os.getpid(), at=time.time())
    witness().rpush(os.environ["HA_WITNESS_PREFIX"] + "runs", json.dumps(data))


@shared_task(base=SentinelTask, bind=True, name="tests.ha.step", task_type="build", lock_key="ha:{n}",
             lock_ttl=30)
def step(self, n, sleep=0.3):
    """Holds the lease ``ha:<n>`` for ``sleep`` seconds; records its fencing token."""
    record(n=n, task_id=self.request.id, phase="start", token=self.lease.token)
    time.sleep(sleep)
    record(n=n, task_id=self.request.id, phase="end", token=self.lease.token, lost=self.lease.lost)
    return n


@shared_task(name="tests.ha.plain")
def plain(n, sleep=0.3):
    """Stock Celery's side of the benchmark: no lease, only the record."""
    witness().rpush(os.environ["HA_WITNESS_PREFIX"] + "runs",
                    json.dumps({"n": n, "phase": "end", "pid": os.getpid(), "at": time.time()}))
    time.sleep(sleep)
    return n


@shared_task(base=SentinelTask, bind=True, name="tests.ha.hold", task_type="build")
def hold(self, tag, first=60.0, then=0.2):
    """Runs ``first`` seconds, or ``then`` once failover has given it back."""
    recovered = getattr(self.request, "sentinel_recovered", None)
    record(tag=tag, task_id=self.request.id, phase="start", recovered=recovered)
    time.sleep(then if recovered else first)
    return tag
