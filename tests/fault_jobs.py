"""Tasks the fault tests run on real workers. Each start and end is appended to a file (``FAULTS_RUNLOG``),
not to Redis, so the record survives a Redis that is down or restarts empty."""
import json
import os
import signal
import time

from celery import shared_task

from sentinel_celery.config import get_config
from sentinel_celery.task import SentinelTask


def _log(phase, task_id, **data):
    path = os.environ.get("FAULTS_RUNLOG")
    if not path:
        return
    line = json.dumps({"phase": phase, "id": task_id, "worker": get_config().worker_id, "pid": os.getpid(),
                       "at": time.time(), **data}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write of a short line: appends from several processes interleave whole
    finally:
        os.close(fd)


@shared_task(base=SentinelTask, bind=True, name="tests.faults.work", task_type="build")
def work(self, n, seconds=0.5):
    _log("start", self.request.id, n=n, recovered=getattr(self.request, "sentinel_recovered", None))
    time.sleep(seconds)
    _log("end", self.request.id, n=n)
    return {"n": n, "worker": get_config().worker_id}


@shared_task(base=SentinelTask, bind=True, name="tests.faults.leased", task_type="build", lock_key="faults:{res}",
             lock_ttl=30, lock_contention="retry")
def leased(self, res, seconds=0.5):
    token = self.lease.token
    _log("start", self.request.id, res=res, token=token)
    time.sleep(seconds)
    _log("end", self.request.id, res=res, token=token, lost=self.lease.lost)
    return {"res": res, "token": token, "worker": get_config().worker_id}


@shared_task(base=SentinelTask, bind=True, name="tests.faults.store_then_die", task_type="build")
def store_then_die(self):
    """Runs to the end and stores its outcome, then its whole worker dies before the ack (a machine lost at the
    worst moment)."""
    _log("start", self.request.id)
    _log("end", self.request.id)
    self.backend.store_result(self.request.id, {"done": True}, "SUCCESS", request=self.request)
    os.killpg(os.getpgrp(), signal.SIGKILL)
