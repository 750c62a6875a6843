"""On ``amqp://``: acknowledge each message on receipt, after recording it (broker/amqp_held.py).

RabbitMQ closes a consumer's channel when it holds a delivery unacknowledged longer than
``consumer_timeout``, so a Sentinel worker on RabbitMQ never holds one: in ``task_received`` (the
worker's main process, before the request reaches the pool or the ETA timer) it

1. claims the message in Redis — a record with a fresh token, listed in ``tags:<instance>``; a
   delivery that someone already holds (a copy RabbitMQ requeued after a worker died between its
   record and its ack) is acknowledged and dropped, so it does not run twice;
2. acknowledges it to RabbitMQ;
3. replaces the request's ack/reject callbacks: when Celery would ack (the task finished, failed,
   was revoked), the record is forgotten; when it would reject with requeue (a pool child died), the
   message is republished from the record; without requeue, forgotten.

What a worker holds still counts against its prefetch window: each acknowledged-on-receipt message
lowers the channel's ``basic.qos`` by one until it finishes. RabbitMQ cannot be told "0", so at a
window of 1 the worker cancels its task consumers and resumes when a message finishes.

At shutdown (after the pool finished) whatever is still recorded never ran: it is republished.
A worker killed or declared dead is failover's business (it republishes the records).

Redis keys: those of broker/amqp_held.py.
"""
from __future__ import annotations

import functools
import logging
import threading

from celery import signals

from sentinel_celery.broker.amqp_held import HELD_STAMP, HeldMessages
from sentinel_celery.broker.amqp_transport import envelope_of
from sentinel_celery.broker.factory import broker_for, is_amqp
from sentinel_celery.routing import HOME_PROPERTY
from sentinel_celery.state.connection import get_redis
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger(__name__)


class HeldWindow:
    """The prefetch window with acknowledged-on-receipt messages counted in (see the module docstring)."""

    def __init__(self):
        self.counted: set[str] = set()   # their slot was taken out of basic.qos
        self.owing: list[str] = []       # received while the window was at 1
        self.paused = False

    def received(self, consumer, token: str) -> None:
        qos = getattr(consumer, "qos", None)
        if qos is None or not qos.value:  # no prefetch limit: nothing to count
            return
        if qos.value > 1:
            qos.decrement_eventually()
            qos.update()
            self.counted.add(token)
            return
        self.owing.append(token)
        if not self.paused:
            self._set_consuming(consumer, False)

    def finished(self, consumer, token: str) -> None:
        if token in self.counted:
            self.counted.discard(token)
            if self.owing:
                self.counted.add(self.owing.pop(0))  # the freed slot is the owing one's now
            elif getattr(consumer, "qos", None) is not None:
                consumer.qos.increment_eventually()
        elif token in self.owing:
            self.owing.remove(token)
        if self.paused and not self.owing:
            self._set_consuming(consumer, True)

    def _set_consuming(self, consumer, on: bool) -> None:
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is None:
            return
        try:
            if on:
                task_consumer.consume()
            else:
                task_consumer.cancel()
            self.paused = not on
        except Exception as exc:  # a connection being lost: Celery's reconnect starts consuming anew
            logger.warning("sentinel: could not %s consuming: %s", "resume" if on else "pause", exc)
            self.paused = False


class HeldRecorder:
    """One worker process's side of acknowledge-on-receipt (see the module docstring)."""

    def __init__(self, runtime: WorkerRuntime, held: HeldMessages):
        self.runtime = runtime
        self.held = held
        self.window = HeldWindow()
        self._lock = threading.Lock()
        self.mine: dict[str, str] = {}  # token -> instance that recorded it

    def on_task_received(self, consumer, request) -> None:
        message = getattr(request, "message", None)
        if message is None or message.acknowledged:
            return
        envelope = envelope_of(message)
        home = (envelope.get("properties") or {}).get(HOME_PROPERTY)
        info = message.delivery_info or {}
        exchange, routing_key = ("", home) if home else (info.get("exchange") or "", info.get("routing_key") or "")
        instance = self.runtime.instance
        token = self.held.claim(instance, envelope, exchange, routing_key)
        if token is None:
            message.ack()
            request._on_ack = request._on_reject = _noop
            request._already_revoked = True  # Celery then never hands it to the pool
            logger.warning("sentinel: task %s[%s] was delivered again while another delivery of it is held "
                           "(a worker died between recording and acknowledging it); dropped this copy",
                           request.name, request.id)
            return
        with self._lock:
            self.mine[token] = instance
        request.request_dict[HELD_STAMP] = token
        request._on_ack = functools.partial(self._finished, consumer, token)
        request._on_reject = functools.partial(self._rejected, consumer, token)
        self.window.received(consumer, token)
        message.ack()

    def _finished(self, consumer, token: str, *args, **kwargs) -> None:
        with self._lock:
            instance = self.mine.pop(token, None)
        try:
            self.held.forget(token, instance or self.runtime.instance)
        except Exception as exc:  # the record expires with the failover visibility TTL
            logger.warning("sentinel: could not forget held message %s: %s", token, exc)
        self.window.finished(consumer, token)

    def _rejected(self, consumer, token: str, _logger=None, _errors=None, requeue: bool = False, **kwargs) -> None:
        if requeue:
            try:
                if broker_for(self.runtime.worker.app).restore(token, headers={}) is not None:
                    logger.warning("sentinel: message %s republished (its pool process was lost)", token)
            except Exception:
                logger.exception("sentinel: could not republish held message %s; failover will", token)
                return
        self._finished(consumer, token)

    def on_stop(self, runtime: WorkerRuntime) -> None:
        """After the pool finished: what is still recorded never ran; give it back."""
        with self._lock:
            tokens = list(self.mine)
            self.mine.clear()
        if not tokens:
            return
        broker = broker_for(runtime.worker.app)
        try:
            back = sum(1 for t in tokens if broker.restore(t, headers={}) is not None)
        finally:
            broker.close()
        logger.info("sentinel: %d received message(s) that never ran given back at shutdown", back)


def _noop(*args, **kwargs) -> None:
    return None


def _start(runtime: WorkerRuntime) -> None:
    if not is_amqp(runtime.worker.app.conf.broker_url):
        return
    cfg = runtime.cfg
    runtime.held = HeldRecorder(runtime, HeldMessages(get_redis(cfg.redis_url), cfg.namespace,
                                                      cfg.get("distributed.failover.visibilityTimeoutSeconds")))


def _stop(runtime: WorkerRuntime) -> None:
    recorder = getattr(runtime, "held", None)
    if recorder is not None:
        recorder.on_stop(runtime)


def _on_task_received(sender=None, request=None, **kwargs) -> None:
    recorder = getattr(WorkerRuntime.current, "held", None)
    if recorder is not None and request is not None:
        recorder.on_task_received(sender, request)


def connect_held_messages() -> None:
    """Acknowledge on receipt on ``amqp://`` in the Sentinel workers this process starts. Idempotent."""
    for hooks, hook in ((WorkerRuntime.on_start, _start), (WorkerRuntime.on_stop, _stop)):
        if hook not in hooks:
            hooks.append(hook)
    signals.task_received.connect(_on_task_received, weak=False, dispatch_uid="sentinel-held-received")
