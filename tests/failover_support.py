"""What the failover tests on Redis (test_failover.py) and on RabbitMQ (test_rabbitmq.py) share."""
from __future__ import annotations

import threading

import pytest
from celery.result import AsyncResult

from sentinel_celery.cluster.failover import WorkerLostRepeatedly
from sentinel_celery.cluster.monitor import Monitor
from sentinel_celery.config import get_config


def poison_until_dead_lettered(app) -> AsyncResult:
    """Send ``tests.fo.poison`` (it kills every worker that runs it) with a standalone monitor running, as
    ``sentinel monitor`` does, so that failover outlives both workers; return it once it failed with
    :class:`WorkerLostRepeatedly` after killing two of them."""
    stopping = threading.Event()
    standalone = Monitor(app, get_config())
    thread = threading.Thread(target=standalone.run, args=(stopping,), daemon=True)
    thread.start()
    try:
        bad = app.send_task("tests.fo.poison", kwargs={"tag": "poison"})
        with pytest.raises(WorkerLostRepeatedly, match="died 2 time"):
            bad.get(timeout=40)
    finally:
        stopping.set()
        thread.join(10)
    return bad
