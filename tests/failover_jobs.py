"""Tasks the failover tests run on real workers; each records what happened in Redis."""
import json
import os
import signal
import time

from celery import shared_task

from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.task import SentinelTask


def _record(kind, **data):
    cfg = get_config()
    data.update(worker=cfg.worker_id, pid=os.getpid(), at=time.time())
    get_redis().rpush(f"{cfg.namespace}test:{kind}", json.dumps(data))


@shared_task(base=SentinelTask, bind=True, name="tests.fo.slow", task_type="build")
def slow(self, tag, first=60.0, then=0.2):
    """Sleeps ``first`` seconds, or ``then`` once failover has given it back (redelivered)."""
    recovered = getattr(self.request, "sentinel_recovered", None)
    _record("runs", tag=tag, task_id=self.request.id, recovered=recovered)
    time.sleep(then if recovered else first)
    return {"tag": tag, "worker": get_config().worker_id}


@shared_task(base=SentinelTask, bind=True, name="tests.fo.leased", task_type="build", lock_key="fo:{tag}",
             lock_ttl=30, lock_contention="fail")
def leased(self, tag, first=8.0, then=0.5):
    """Holds a 30 s lease: a re-run can only get it this soon because failover fenced the old holder."""
    recovered = getattr(self.request, "sentinel_recovered", None)
    _record("runs", tag=tag, task_id=self.request.id, token=self.lease.token, phase="start")
    time.sleep(then if recovered else first)
    _record("runs", tag=tag, task_id=self.request.id, token=self.lease.token, phase="end", lost=self.lease.lost)
    return {"tag": tag, "worker": get_config().worker_id, "token": self.lease.token}


@shared_task(base=SentinelTask, bind=True, name="tests.fo.poison", task_type="build")
def poison(self, tag):
    """Kills the whole worker that runs it (main process and pool), like a segfaulting extension."""
    _record("runs", tag=tag, task_id=self.request.id)
    os.killpg(os.getpgrp(), signal.SIGKILL)
