"""Alerts: rules over a cluster snapshot, their firing state in Redis, and where they are sent.

:func:`evaluate_alerts` is a pure function of a snapshot (:mod:`.snapshot`) and thresholds
(``monitoring.alerts.*``):

  redis_data_loss    critical  Redis came back empty (state/marker.py), until ``sentinel cluster clear-data-loss``
  workers_unhealthy  critical  healthy (beating) workers < healthyWorkersCritical of live workers, or none
  workers_stale      warning   some worker missed its heartbeats (not yet declared dead)
  utilization_high   warning   busy slots / slots of healthy workers > utilizationWarning
  queue_backlog      warning   a queue holds more than queueBacklogWarning messages (one alert per queue)
  github_budget_low  warning   the mirror's remaining rate limit < githubBudgetLow
  outbox_backlog     warning   the mirror's outbox holds more than outboxBacklogWarning events

:class:`AlertEvaluator` is what the monitor leader runs every ``monitoring.alerts.intervalMs``: it
collects a snapshot, evaluates, and compares with the firing set in Redis. An alert is announced
once when it starts firing (HSETNX decides which caller announces, so two evaluators never double
it), again only if its severity or summary changes, and once when it resolves (HDEL decides).

Sinks:
  log      ``sentinel.alerts`` logger: warning/critical when firing, info when resolved
  webhook  ``monitoring.alerts.webhookUrl``: POST of the transition as JSON, from a background thread
           with a bounded queue (full: the transition is dropped and counted) and retries with back-off;
           the evaluator never waits on it
  github   an issue per alert, labelled ``sentinel:alert``: opened once, edited on update, closed on
           resolve. Sentinel never calls GitHub here: each transition is appended to the mirror's
           outbox (:func:`sentinel_celery.state.outbox.append`) as kind ``alert``, key = the alert name,
           state ``{"op": "open"|"update"|"close", "state": "open"|"closed", "severity", "summary",
           "title", "body", "labels": ["sentinel:alert"], "since", "at"}``, ``final=True`` on close.
           The same alert firing again later re-uses the key with ``state: "open"``.

Redis keys (under the namespace):
  alerts:firing   hash: alert name -> JSON {name, rule, severity, summary, value, threshold, labels,
                  since, last_seen}
  alerts:events   stream (MAXLEN ~ 1000): op (open/update/close), name, severity, summary, at
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import redis

from sentinel_celery.cluster.snapshot import collect_snapshot
from sentinel_celery.config import Config, get_config
from sentinel_celery.state import outbox
from sentinel_celery.state.connection import get_redis
from sentinel_celery.worker.duty import run_step

logger = logging.getLogger("sentinel.alerts")

WARNING, CRITICAL = "warning", "critical"
SEVERITY_ORDER = {WARNING: 1, CRITICAL: 2}
ALERT_LABEL = "sentinel:alert"
EVENTS_MAXLEN = 1000


@dataclass(frozen=True)
class Thresholds:
    utilization_warning: float = 0.90
    healthy_workers_critical: float = 0.75
    queue_backlog_warning: int = 100
    github_budget_low: int = 500
    outbox_backlog_warning: int = 1000

    @classmethod
    def from_config(cls, cfg: Config) -> "Thresholds":
        a = cfg.get("monitoring.alerts")
        return cls(a["utilizationWarning"], a["healthyWorkersCritical"], a["queueBacklogWarning"],
                   a["githubBudgetLow"], a["outboxBacklogWarning"])


@dataclass(frozen=True)
class Alert:
    name: str            # unique while firing, e.g. "queue_backlog:build"
    rule: str
    severity: str
    summary: str
    value: float
    threshold: float
    labels: dict = field(default_factory=dict, hash=False, compare=False)

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_alerts(snapshot: dict, thresholds: Thresholds | None = None) -> list[Alert]:
    """The alerts a snapshot warrants, most severe first. Pure: no I/O."""
    t = thresholds or Thresholds()
    alerts: list[Alert] = []
    loss = snapshot.get("data_loss")
    if loss:
        alerts.append(Alert("redis_data_loss", "redis_data_loss", CRITICAL, loss["summary"],
                            float(loss.get("restarted_at") or 0), 0.0,
                            {"restarted_at": loss.get("restarted_at"), "detected_by": loss.get("by")}))
    live = [w for w in snapshot.get("workers", []) if w["status"] != "offline"]
    healthy = [w for w in live if w["status"] != "stale"]
    stale = [w for w in live if w["status"] == "stale"]

    if not live:
        alerts.append(Alert("workers_unhealthy", "workers_unhealthy", CRITICAL,
                            "no live workers: nothing is consuming any queue", 0.0, t.healthy_workers_critical))
    else:
        ratio = len(healthy) / len(live)
        if ratio < t.healthy_workers_critical:
            alerts.append(Alert("workers_unhealthy", "workers_unhealthy", CRITICAL,
                                f"only {len(healthy)} of {len(live)} workers are healthy ({ratio:.0%} < "
                                f"{t.healthy_workers_critical:.0%})", round(ratio, 4), t.healthy_workers_critical,
                                {"stale": sorted(w["id"] for w in stale)}))
    if stale:
        alerts.append(Alert("workers_stale", "workers_stale", WARNING,
                            f"{len(stale)} worker(s) missed heartbeats: {', '.join(sorted(w['id'] for w in stale))}",
                            float(len(stale)), 0.0, {"workers": sorted(w["id"] for w in stale)}))

    slots = sum(w["capacity"] for w in healthy)
    if slots:
        utilization = sum(min(w["active"], w["capacity"]) for w in healthy) / slots
        if utilization > t.utilization_warning:
            alerts.append(Alert("utilization_high", "utilization_high", WARNING,
                                f"cluster utilization {utilization:.0%} > {t.utilization_warning:.0%}",
                                round(utilization, 4), t.utilization_warning))

    for name, q in sorted(snapshot.get("queues", {}).items()):
        if q["length"] > t.queue_backlog_warning:
            age = q.get("oldest_age_seconds")
            alerts.append(Alert(f"queue_backlog:{name}", "queue_backlog", WARNING,
                                f"queue '{name}' holds {q['length']} messages (> {t.queue_backlog_warning})"
                                + (f", oldest waiting {age:.0f}s" if age is not None else ""),
                                float(q["length"]), float(t.queue_backlog_warning), {"queue": name}))

    github = snapshot.get("github") or {}
    remaining = github.get("rate_limit_remaining")
    if remaining is not None and remaining < t.github_budget_low:
        alerts.append(Alert("github_budget_low", "github_budget_low", WARNING,
                            f"GitHub rate limit remaining {remaining} < {t.github_budget_low}",
                            float(remaining), float(t.github_budget_low)))
    depth = github.get("outbox_depth")
    if depth is not None and depth > t.outbox_backlog_warning:
        alerts.append(Alert("outbox_backlog", "outbox_backlog", WARNING,
                            f"mirror outbox holds {depth} events (> {t.outbox_backlog_warning})",
                            float(depth), float(t.outbox_backlog_warning)))
    return sorted(alerts, key=lambda a: (-SEVERITY_ORDER[a.severity], a.name))


@dataclass
class Transition:
    op: str          # open | update | close
    alert: dict      # the alert as stored (for close: as it was when last firing)
    at: float


# -- sinks --------------------------------------------------------------------------------------------
class LogSink:
    def send(self, t: Transition) -> None:
        a = t.alert
        if t.op == "close":
            logger.info("alert resolved: %s (%s)", a["name"], a["summary"])
        else:
            level = logging.CRITICAL if a["severity"] == CRITICAL else logging.WARNING
            logger.log(level, "alert %s: %s [%s]", "firing" if t.op == "open" else "updated", a["summary"], a["name"])


class WebhookSink:
    """POSTs transitions from a background thread; a bounded queue, retries with back-off, never blocks."""

    def __init__(self, url: str, *, max_queue: int = 100, attempts: int = 5, first_delay: float = 0.5,
                 timeout: float = 5.0):
        self.url = url
        self.attempts, self.first_delay, self.timeout = attempts, first_delay, timeout
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="sentinel-alert-webhook", daemon=True)
        self._thread.start()

    def send(self, t: Transition) -> None:
        try:
            self.queue.put_nowait(t)
        except queue.Full:
            self.dropped += 1
            logger.warning("alert webhook queue full; dropped %s of %s", t.op, t.alert["name"])

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "sentinel-celery"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read()

    def _run(self) -> None:
        while True:
            t = self.queue.get()
            body = json.dumps({"op": t.op, "at": t.at, "alert": t.alert, "source": "sentinel"}).encode()
            delay = self.first_delay
            for attempt in range(1, self.attempts + 1):
                try:
                    self._post(body)
                    self.delivered += 1
                    break
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    if attempt == self.attempts:
                        self.failed += 1
                        logger.warning("alert webhook gave up on %s of %s after %d attempts: %s",
                                       t.op, t.alert["name"], attempt, exc)
                    else:
                        time.sleep(delay)
                        delay *= 2
            self.queue.task_done()

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is drained (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.queue.unfinished_tasks


class GitHubIssueSink:
    """Hands transitions to the mirror's outbox (``kind="alert"``, key = alert name); see the module docstring."""

    def __init__(self, append: Callable[..., object] | None = None):
        self.append = append if append is not None else outbox.append

    def send(self, t: Transition) -> None:
        a = t.alert
        self.append("alert", a["name"], {
            "op": t.op, "state": "closed" if t.op == "close" else "open", "severity": a["severity"],
            "summary": a["summary"], "title": f"[sentinel alert] {a['name']}: {a['summary']}",
            "body": render_issue_body(t), "labels": [ALERT_LABEL], "since": a["since"], "at": t.at,
        }, final=t.op == "close")


def render_issue_body(t: Transition) -> str:
    a = t.alert
    lines = [f"**{a['severity'].upper()}** — {a['summary']}", "",
             f"- rule: `{a['rule']}`", f"- value: {a['value']} (threshold {a['threshold']})",
             f"- firing since: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(a['since']))}"]
    if t.op == "close":
        lines.append(f"- resolved: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(t.at))}")
    return "\n".join(lines)


# -- state + evaluator ----------------------------------------------------------------------------------
class AlertState:
    """The firing set in Redis; HSETNX / HDEL make open and close happen once across evaluators."""

    def __init__(self, client: redis.Redis, namespace: str):
        self.client = client
        self.key = f"{namespace}alerts:firing"
        self.events_key = f"{namespace}alerts:events"

    def firing(self) -> dict[str, dict]:
        return {k: json.loads(v) for k, v in self.client.hgetall(self.key).items()}

    def apply(self, alerts: Iterable[Alert], now: float) -> list[Transition]:
        current = {a.name: a for a in alerts}
        before = self.firing()
        transitions: list[Transition] = []
        for name, a in current.items():
            record = {**a.as_dict(), "since": now, "last_seen": now}
            old = before.get(name)
            if old is None:
                if self.client.hsetnx(self.key, name, json.dumps(record)):
                    transitions.append(Transition("open", record, now))
                continue
            record["since"] = old["since"]
            self.client.hset(self.key, name, json.dumps(record))
            if (old["severity"], old["summary"]) != (a.severity, a.summary):
                transitions.append(Transition("update", record, now))
        for name, old in before.items():
            if name not in current and self.client.hdel(self.key, name):
                transitions.append(Transition("close", old, now))
        if transitions:
            pipe = self.client.pipeline(transaction=False)
            for t in transitions:
                pipe.xadd(self.events_key, {"op": t.op, "name": t.alert["name"], "severity": t.alert["severity"],
                                            "summary": t.alert["summary"], "at": t.at},
                          maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.execute()
        return transitions


class AlertEvaluator:
    """Snapshot → rules → firing state → sinks. ``tick()`` is what the monitor leader calls."""

    def __init__(self, cfg: Config | None = None, app=None, sinks: list | None = None,
                 client: redis.Redis | None = None):
        self.cfg = cfg or get_config()
        self.app = app
        self.client = client or get_redis(self.cfg.redis_url)
        self.state = AlertState(self.client, self.cfg.namespace)
        self.thresholds = Thresholds.from_config(self.cfg)
        if sinks is None:
            sinks = [LogSink(), GitHubIssueSink()]
            url = self.cfg.get("monitoring.alerts.webhookUrl")
            if url:
                sinks.append(WebhookSink(url))
        self.sinks = sinks

    @property
    def interval(self) -> float:
        return self.cfg.get("monitoring.alerts.intervalMs") / 1000.0

    def tick(self, snapshot: dict | None = None) -> list[Transition]:
        if snapshot is None:
            snapshot = collect_snapshot(self.cfg, self.app, self.client)
        transitions = self.state.apply(evaluate_alerts(snapshot, self.thresholds), time.time())
        for t in transitions:
            for sink in self.sinks:
                try:
                    sink.send(t)
                except Exception:  # one broken sink must not stop the others
                    logger.exception("alert sink %s failed", type(sink).__name__)
        return transitions

    def run(self, stop: threading.Event, should_tick: Callable[[], bool] = lambda: True) -> None:
        """Tick every ``interval`` until ``stop`` is set, while ``should_tick()`` (e.g. "I am the leader")."""
        while not stop.is_set():
            run_step(lambda: should_tick() and self.tick(), "alert evaluation")
            stop.wait(self.interval)

    def start(self, stop: threading.Event, should_tick: Callable[[], bool] = lambda: True) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop, should_tick), name="sentinel-alerts", daemon=True)
        thread.start()
        return thread
