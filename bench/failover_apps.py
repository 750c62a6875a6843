"""The Celery app the failover benchmark runs, in one of three set-ups chosen by BENCH_FO_VARIANT:

stock     plain Celery, acks_late + reject_on_worker_lost, default visibility timeout (1 h)
tuned     the same with visibility_timeout=10 s and kombu's unacked sweep every 1 s
sentinel  the Sentinel app with the shipped config (heartbeat 2 s, stale threshold 6 s)
sentinel-hb  the same with the connection watch off (heartbeat and ping only)

With BENCH_FO_BROKER (an amqp:// URL) the broker is RabbitMQ; the runs are recorded in Redis either way.
"""
import json
import os
import time

from celery import Celery

VARIANT = os.environ.get("BENCH_FO_VARIANT", "stock")
URL = os.environ.get("BENCH_FO_URL", "redis://127.0.0.1:6379/10")
BROKER = os.environ.get("BENCH_FO_BROKER") or URL  # RabbitMQ for --broker amqp://…; records stay in Redis

if VARIANT.startswith("sentinel"):
    from sentinel_celery.plugin import create_app
    app = create_app("bench_failover")
else:
    app = Celery("bench_failover", broker=BROKER, backend=URL)
    app.conf.task_acks_late = True
    app.conf.task_reject_on_worker_lost = True
    if VARIANT == "tuned":
        app.conf.broker_transport_options = {"visibility_timeout": 10, "unacked_restore_interval": 1,
                                             "unacked_restore_throttle": 1}
# One task at a time per worker, so what a worker holds is what it runs (same for every variant).
app.conf.worker_prefetch_multiplier = 1

_redis = None


@app.task(name="bench.fo.job", bind=True)
def job(self, tag, seconds, then=None):
    """Sleeps ``seconds``; a second run of the same tag (after a failover) sleeps ``then`` if given."""
    global _redis
    if _redis is None:
        import redis
        _redis = redis.Redis.from_url(URL)
    n = _redis.rpush(f"benchfo:runs:{tag}", json.dumps({"worker": os.environ.get("WORKER_ID"), "at": time.time()}))
    time.sleep(then if n > 1 and then is not None else seconds)
    return tag
