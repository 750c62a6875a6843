"""``SentinelTask``: the task base class — a task type (its queue) and an optional fenced lease.

    @app.task(base=SentinelTask, task_type="deploy", lock_key="deploy:{env}")
    def deploy(env): ...

``lock_key`` is a format string over the task's arguments (or ``True``: one lease per task name).
While the body runs the lease is renewed in the background; the body sees ``self.lease.token``
(the fencing token) and ``self.lease.lost``. ``lock_contention`` says what happens when the lease
is held: ``retry`` (re-queue after retryDelayMs × 2^n, up to retryAttempts, then fail with
``LockContended``), ``fail`` (fail now) or ``skip`` (succeed with a ``skipped`` result).

Per call, ``apply_async(..., task_type="test")`` (or ``job_type=``, which ``send_task`` also takes)
routes one message to another type's queue; a type that is not configured is refused at send time.
"""
from __future__ import annotations

import inspect
import logging

from celery import Task

from sentinel_celery.config import get_config
from sentinel_celery.state.leases import Lease, LeaseLost, LockContended, backoff_delays, try_acquire
from sentinel_celery.worker.fencing import check_before_start

logger = logging.getLogger(__name__)

CONTENTION_POLICIES = ("retry", "fail", "skip")

#: callables(task, lease, held: bool) told when a leased task takes (True) and gives back (False)
#: its lease; the GitHub mirror uses this for the ``sentinel:locked`` label. They must not raise.
lease_hooks: list = []


def _tell_lease_hooks(task, lease, held: bool) -> None:
    for hook in lease_hooks:
        try:
            hook(task, lease, held)
        except Exception:
            logger.exception("sentinel: lease hook failed")


class SentinelTask(Task):
    abstract = True
    #: stops a job's command when the pool process running the task is lost (worker/commands.py)
    Request = "sentinel_celery.worker.commands:CommandRequest"
    task_type: str | None = None
    lock_key: str | bool | None = None
    lock_ttl: float | None = None
    lock_contention: str = "retry"

    @property
    def lease(self) -> Lease | None:
        """The lease held by the current execution, if any."""
        return getattr(self.request, "sentinel_lease", None)

    def apply_async(self, args=None, kwargs=None, task_id=None, producer=None, link=None, link_error=None,
                    shadow=None, **options):
        # ``task_type=`` per call means what ``job_type=`` means (Celery's send_task reserves the name)
        if "task_type" in options:
            task_type = options.pop("task_type")
            if options.setdefault("job_type", task_type) != task_type:
                raise TypeError(f"task {self.name}: task_type={task_type!r} and job_type={options['job_type']!r} "
                                f"disagree; pass one of them")
        return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)

    def before_start(self, task_id, args, kwargs):
        # A worker declared dead and back (SIGCONT) must not start what failover gave to another.
        check_before_start(self)

    def lease_name(self, args: tuple, kwargs: dict) -> str:
        if self.lock_key is True:
            return self.name
        signature = self.__dict__.get("_lease_signature")
        if signature is None:
            signature = self._lease_signature = inspect.signature(self.run)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name}: cannot bind arguments for lock_key: {exc}") from None
        bound.apply_defaults()
        try:
            return str(self.lock_key).format(**bound.arguments)
        except (KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"task {self.name}: lock_key {self.lock_key!r} refers to {exc}, "
                             f"which is not an argument of the task") from None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Only leased tasks wrap the call: Celery's tracer calls ``run`` directly (its fast path)
        # when a task class does not define ``__call__``.
        if cls.lock_key and "__call__" not in cls.__dict__:
            cls.__call__ = SentinelTask._call_with_lease

    def _call_with_lease(self, *args, **kwargs):
        if self.lock_contention not in CONTENTION_POLICIES:
            raise ValueError(f"task {self.name}: lock_contention must be one of {', '.join(CONTENTION_POLICIES)}")
        cfg = get_config()
        name = self.lease_name(args, kwargs)
        ttl = self.lock_ttl or cfg.get("distributed.locking.ttlSeconds")
        try:
            held = try_acquire(name, ttl, worker=cfg.worker_id, task_id=self.request.id or "")
        except LockContended as exc:
            return self._contended(exc, cfg)
        self.request.sentinel_lease = held
        if lease_hooks:
            _tell_lease_hooks(self, held, True)
        try:
            if self.request.called_directly:
                result = Task.__call__(self, *args, **kwargs)
            else:  # the worker's tracer already pushed the task and its request: its fast path
                result = self.run(*args, **kwargs)
        finally:
            released = held.release()
            self.request.sentinel_lease = None
            if lease_hooks:
                _tell_lease_hooks(self, held, False)
        if not released and held.lost:
            raise LeaseLost(held.name, held.token)
        return result

    def _contended(self, exc: LockContended, cfg):
        if self.lock_contention == "fail" or self.request.called_directly:
            raise exc
        if self.lock_contention == "skip":
            logger.info("task %s[%s] skipped: %s", self.name, self.request.id, exc)
            return {"skipped": True, "reason": str(exc)}
        attempts = cfg.get("distributed.locking.retryAttempts")
        delays = backoff_delays(attempts, cfg.get("distributed.locking.retryDelayMs"))
        n = self.request.retries
        if n >= attempts:
            raise exc
        raise self.retry(exc=exc, countdown=delays[n], max_retries=attempts)
