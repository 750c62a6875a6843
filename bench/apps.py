"""Celery apps the benchmarks run: plain Celery with stock settings, and the same noop under Sentinel."""
import os

from celery import Celery

from sentinel_celery.plugin import create_app
from sentinel_celery.task import SentinelTask

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

plain_app = Celery("bench_plain", broker=os.environ.get("BENCH_PLAIN_URL", REDIS),
                   backend=os.environ.get("BENCH_PLAIN_URL", REDIS))


@plain_app.task(name="bench.plain_noop")
def plain_noop(i=0):
    return i


def _sentinel_app():
    app = create_app("bench_sentinel")

    @app.task(base=SentinelTask, name="bench.sentinel_noop", task_type="build")
    def sentinel_noop(i=0):
        return i

    @app.task(base=SentinelTask, name="bench.sentinel_leased_noop", task_type="build", lock_key="bench:{i}",
              lock_ttl=30)
    def sentinel_leased_noop(i=0):
        return i

    return app


sentinel_app = _sentinel_app() if os.environ.get("REDIS_URL") else None
