"""Tasks the operations tests run on real workers (logging, holding a slot)."""
import time

from celery import shared_task
from celery.utils.log import get_task_logger

from sentinel_celery.task import SentinelTask

logger = get_task_logger(__name__)


@shared_task(base=SentinelTask, bind=True, name="tests.ops.log_lines", task_type="build")
def log_lines(self, text, fail=False):
    logger.warning("shipping %s", text)
    if fail:
        try:
            raise ValueError(f"broken {text}")
        except ValueError:
            logger.exception("failed %s", text)
    return self.request.id


@shared_task(base=SentinelTask, name="tests.ops.hold", task_type="build")
def hold(seconds):
    time.sleep(seconds)
    return seconds
