"""The intake as a worker duty: one worker of the cluster receives webhooks or polls GitHub.

With ``github.intake.inWorkers`` every worker runs an :class:`IntakeDuty` thread; the holder of the
fenced lease ``sentinel:intake`` runs :class:`IntakeService` — in ``webhook`` mode the HTTP receiver on
``github.intake.host``:``github.intake.port`` and its processor, in ``poll`` mode the poller — and
stops it when it loses the lease, so another worker takes over within the lease's TTL.
:class:`IntakeService` is also what ``sentinel intake serve`` runs in the foreground.

Redis keys: the ``sentinel:intake`` lease (state/leases.py); the intake's own (intake.py, guard.py,
poll.py).
"""
from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from sentinel_celery.config import Config
from sentinel_celery.github.budget import Budget, Pace
from sentinel_celery.github.client import GitHubClient
from sentinel_celery.intake.guard import DeliveryLedger
from sentinel_celery.intake.intake import Inbox, Intake
from sentinel_celery.intake.poll import Poller, PollThread
from sentinel_celery.intake.server import IntakeHTTPServer, Processor, Receiver
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import Lease, LockContended, release_quietly, try_acquire
from sentinel_celery.worker.duty import DutyThread, run_step
from sentinel_celery.worker.runtime import WorkerRuntime

logger = logging.getLogger("sentinel.intake")

LEASE_NAME = "sentinel:intake"
LEASE_TTL = 15.0


class IntakeService:
    """The receiver (or poller) and its processor, started and stopped together."""

    def __init__(self, app: Celery, cfg: Config, *, mode: str | None = None, host: str | None = None,
                 port: int | None = None, processors: int = 2):
        intake_cfg = cfg.get("github.intake")
        self.mode = mode or intake_cfg["mode"]
        self.client = get_redis(cfg.redis_url)
        budget = Budget(self.client, cfg.namespace, Pace.from_config(cfg)).load()
        self.github = GitHubClient(cfg, budget, max_wait=2.0)
        self.intake = Intake(app, cfg, self.github, self.client)
        self.ledger = DeliveryLedger(self.client, cfg.namespace, intake_cfg["deliveryTtlSeconds"])
        self.inbox = Inbox(self.client, cfg.namespace)
        self.stopping = threading.Event()
        self.server: IntakeHTTPServer | None = None
        self.threads: list[threading.Thread] = []
        if self.mode == "webhook":
            receiver = Receiver(cfg.get("github.webhookSecret"), self.ledger, self.inbox, intake_cfg["maxBodyBytes"])
            self.server = IntakeHTTPServer(host or intake_cfg["host"],
                                           intake_cfg["port"] if port is None else port, receiver)
            self.threads.append(threading.Thread(target=self.server.serve_forever, args=(0.2,),
                                                 name="sentinel-intake-http", daemon=True))
            self.threads += [Processor(self.intake, self.inbox, self.ledger, self.stopping, f"sentinel-intake-{n}")
                             for n in range(processors)]
        elif self.mode == "poll":
            poller = Poller(self.intake, self.github, self.client, cfg.namespace, self.ledger)
            self.threads.append(PollThread(poller, intake_cfg["pollIntervalMs"] / 1000.0, self.stopping))
        else:
            raise ValueError(f"github.intake.mode is {self.mode!r}: nothing to run")

    @property
    def url(self) -> str | None:
        return self.server.url if self.server else None

    def start(self) -> "IntakeService":
        if self.server is not None:
            recovered = self.inbox.recover()
            if recovered:
                logger.info("sentinel intake: %d delivery(ies) left unfinished by a stopped intake are handled now",
                            recovered)
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)


class IntakeDuty(DutyThread):
    """Runs :class:`IntakeService` while this worker holds the intake lease."""

    def __init__(self, app: Celery, cfg: Config, worker_id: str):
        super().__init__("sentinel-intake-duty")
        self.app, self.cfg, self.worker_id = app, cfg, worker_id
        self.lease: Lease | None = None
        self.service: IntakeService | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                run_step(self.step, "intake duty")
                self.stopping.wait(LEASE_TTL / 3)
        finally:
            self._step_down()

    def step(self) -> None:
        if self.lease is not None and self.lease.lost:
            logger.warning("sentinel intake: %s lost the intake lease; stopping its intake", self.worker_id)
            self._step_down()
        if self.lease is None:
            try:
                self.lease = try_acquire(LEASE_NAME, LEASE_TTL, worker=self.worker_id)
            except LockContended:
                return
            try:
                self.service = IntakeService(self.app, self.cfg).start()
            except Exception:  # a port in use, no secret: let another worker try, and say why
                self._step_down()
                raise
            logger.info("sentinel intake: %s now runs the intake (%s%s)", self.worker_id, self.service.mode,
                        f" at {self.service.url}" if self.service.url else "")
        elif time.monotonic() - self.lease.renewed_at > LEASE_TTL / 2:
            self.lease.renew()

    def _step_down(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            service.stop()
        release_quietly(self.lease)
        self.lease = None


def _start(runtime: WorkerRuntime) -> None:
    thread = IntakeDuty(runtime.worker.app, runtime.cfg, runtime.worker_id)
    runtime.intake_duty = thread
    thread.start()


def _stop(runtime: WorkerRuntime) -> None:
    thread = getattr(runtime, "intake_duty", None)
    if thread is not None:
        thread.stop()


def connect_intake() -> None:
    """Run an intake duty thread in each Sentinel worker this process starts. Idempotent."""
    for hooks, hook in ((WorkerRuntime.on_start, _start), (WorkerRuntime.on_stop, _stop)):
        if hook not in hooks:
            hooks.append(hook)
