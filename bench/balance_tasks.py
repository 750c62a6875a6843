"""The task bench/balance.py runs: sleep for a given time, record where and when it ran."""
import json
import time

from celery import shared_task

from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.task import SentinelTask


@shared_task(base=SentinelTask, name="bench.balance_sleep", task_type="build", ignore_result=True)
def balance_sleep(i, seconds, project_id=None):
    started = time.time()
    time.sleep(seconds)
    cfg = get_config()
    get_redis().rpush(f"{cfg.namespace}bench:runs", json.dumps(
        {"i": i, "worker": cfg.worker_id, "start": started, "end": time.time(), "project": project_id}))
