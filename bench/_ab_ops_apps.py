# TEMPORARY (ops A/B measurement; deleted after use): the bench's Sentinel app without the ops signal handlers.
from celery import signals
from bench.apps import sentinel_app  # noqa: F401

for sig, uid in ((signals.before_task_publish, "sentinel.taskstats.publish"),
                 (signals.task_prerun, "sentinel.taskstats.prerun"),
                 (signals.task_postrun, "sentinel.taskstats.postrun")):
    sig.disconnect(dispatch_uid=uid)
