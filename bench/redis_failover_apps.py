"""The Celery app bench/redis_failover.py runs, in the set-up chosen by BENCH_RF_VARIANT, on the Redis
Sentinel deployment named by REDIS_URL (``redis+sentinel://``):

stock     plain Celery 5.7 on kombu's ``sentinel://`` transport and Celery's ``sentinel://`` result
          backend (master_name in the transport options), acks_late + reject_on_worker_lost
sentinel  the Sentinel app (``install()`` translates REDIS_URL itself); each task holds a lease

Every task records its start and end in a witness Redis (BENCH_RF_WITNESS, under BENCH_RF_PREFIX) that the
failover does not touch.
"""
import json
import os
import time

import redis
from celery import Celery

from sentinel_celery.redis_url import kombu_sentinel_url, kombu_transport_options, parse_sentinel_url
from sentinel_celery.task import SentinelTask

VARIANT = os.environ.get("BENCH_RF_VARIANT", "stock")
PREFIX = os.environ.get("BENCH_RF_PREFIX", "benchrf:")
_witness = None


def record(n, phase):
    global _witness
    if _witness is None:
        _witness = redis.Redis.from_url(os.environ["BENCH_RF_WITNESS"])
    _witness.rpush(PREFIX + "runs", json.dumps({"n": n, "phase": phase, "at": time.time(), "pid": os.getpid()}))


if VARIANT == "sentinel":
    from sentinel_celery.plugin import create_app
    app = create_app("bench_redis_failover")

    @app.task(name="bench.rf.job", base=SentinelTask, task_type="build", lock_key="rf:{n}", lock_ttl=30)
    def job(n, seconds=0.3):
        record(n, "start")
        time.sleep(seconds)
        record(n, "end")
        return n
else:
    _url = parse_sentinel_url(os.environ["REDIS_URL"])
    app = Celery("bench_redis_failover", broker=kombu_sentinel_url(_url), backend=kombu_sentinel_url(_url))
    app.conf.broker_transport_options = kombu_transport_options(_url)
    app.conf.result_backend_transport_options = kombu_transport_options(_url)
    app.conf.task_acks_late = True
    app.conf.task_reject_on_worker_lost = True
    app.conf.task_default_queue = "build"

    @app.task(name="bench.rf.job")
    def job(n, seconds=0.3):
        record(n, "start")
        time.sleep(seconds)
        record(n, "end")
        return n
