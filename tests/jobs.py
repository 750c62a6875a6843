"""Tasks the tests run on real workers; each records what happened in Redis."""
import json
import os
import time

from celery import shared_task

from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.task import SentinelTask


def _record(kind, **data):
    cfg = get_config()
    data.update(worker=cfg.worker_id, pid=os.getpid(), at=time.time())
    get_redis().rpush(f"{cfg.namespace}test:{kind}", json.dumps(data))


@shared_task(base=SentinelTask, bind=True, name="tests.record", task_type="build")
def record(self, tag, sleep=0.0):
    _record("runs", tag=tag, task_id=self.request.id)
    time.sleep(sleep)
    return {"tag": tag, "worker": get_config().worker_id}


@shared_task(base=SentinelTask, bind=True, name="tests.leased", task_type="test", lock_key="res:{resource}",
             lock_ttl=1.0)
def leased(self, resource, sleep=0.0):
    token = self.lease.token
    _record("leased", resource=resource, token=token, phase="start")
    time.sleep(sleep)
    _record("leased", resource=resource, token=token, phase="end", lost=self.lease.lost)
    return {"token": token, "lost": self.lease.lost}


@shared_task(base=SentinelTask, name="tests.contend_fail", task_type="test", lock_key="res:{resource}",
             lock_contention="fail")
def contend_fail(resource):
    return "ran"


@shared_task(base=SentinelTask, name="tests.contend_skip", task_type="test", lock_key="res:{resource}",
             lock_contention="skip")
def contend_skip(resource):
    return "ran"


@shared_task(base=SentinelTask, bind=True, name="tests.contend_retry", task_type="test",
             lock_key="res:{resource}", lock_contention="retry")
def contend_retry(self, resource):
    return {"ran": True, "retries": self.request.retries, "token": self.lease.token}


@shared_task(base=SentinelTask, name="tests.noop", task_type="build")
def noop():
    return None
