"""The mirror writer: one leader drains the outbox and makes GitHub show the truth, within budget.

Every worker runs a :class:`MirrorThread` (``WorkerRuntime.on_start``; ``github.mirror.inWorkers``)
and ``sentinel mirror`` runs the same loop standalone; only the holder of the fenced lease
``sentinel:github-mirror`` acts. Its fencing token is recorded in ``github:meta`` and checked
before every write, so a leader that was paused past its lease cannot write after its successor.

One flush (every ``flushIntervalMs``):

1. fold the outbox stream into the pending table (state.py) — always, even when GitHub is down;
2. plan work from the pending entries and the truth in Redis: linked tasks (tasks.py), worker
   issues (workers.py), alert issues and the dashboard (dashboard.py); every item compares the
   rendered content with the digest of what it wrote last, and writes only differences;
3. run the items by priority (deaths and stops, then finished tasks, then updates, then the
   dashboard), oldest first within a priority, for at most about one flush interval, each request
   paced by the budget;
4. an item that succeeded clears the pending entries it covered; one that GitHub refused for good
   (404/422/403), or that failed in Sentinel itself in ``ITEM_ATTEMPTS`` flushes in a row (logged
   once, with its traceback), is recorded in ``github:rejected`` and cleared, so it never holds up the
   backlog; on 5xx, no answer, or a rate limit,
   the flush stops and everything stays pending: the next flushes retry with back-off (or after
   ``retry-after``/``x-ratelimit-reset``) and converge, because they re-render from the latest state.
   During an outage's back-off a cheap ``GET /rate_limit`` each flush interval tells when GitHub is
   back, so the mirror resumes at once rather than at the end of its back-off.

Every ``reconcileIntervalMs`` (and on ``sentinel github sync``) the issues Sentinel owns are
re-read with conditional GETs (ETag: a 304 costs no rate limit); one edited or closed by hand is
rewritten, one deleted is recreated.

Redis keys: the ``sentinel:github-mirror`` lease (leases.py); the mirror's state (state.py); the
budget (budget.py).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from sentinel_celery.config import Config
from sentinel_celery.github import dashboard, render, tasks, workers
from sentinel_celery.github.budget import Budget, Pace
from sentinel_celery.github.client import (
    AuthFailed,
    Forbidden,
    GitHubClient,
    GitHubError,
    NotConfigured,
    NotFound,
    RateLimited,
    Rejected,
    Unavailable,
    configured,
)
from sentinel_celery.github.issues import IssueOps
from sentinel_celery.github.state import MirrorState
from sentinel_celery.github.work import Context, Work
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import Lease, LockContended, release_quietly, try_acquire
from sentinel_celery.state.registry import RedisRegistry
from sentinel_celery.worker.duty import DutyThread, run_step

logger = logging.getLogger(__name__)

#: flushes in a row an item may fail in Sentinel itself (not in GitHub) before it is given up
ITEM_ATTEMPTS = 3

LEASE_NAME = "sentinel:github-mirror"


class Mirror:
    def __init__(self, cfg: Config, *, worker_id: str = "", github=None, stop: threading.Event | None = None,
                 redis_client: redis.Redis | None = None):
        self.cfg = cfg
        self.worker_id = worker_id
        self.actor = worker_id or f"mirror@{socket.gethostname()}:{os.getpid()}"
        self.redis = redis_client or get_redis(cfg.redis_url)
        m = "github.mirror."
        self.flush_s = max(cfg.get(m + "flushIntervalMs") / 1000.0, 0.05)
        self.retry_max_s = max(cfg.get(m + "retryMaxMs") / 1000.0, self.flush_s)
        self.reconcile_s = cfg.get(m + "reconcileIntervalMs") / 1000.0
        self.ttl = max(3 * self.flush_s, 5.0)
        self.state = MirrorState(self.redis, cfg.namespace, cfg.get(m + "outboxMaxLen"))
        self.budget = Budget(self.redis, cfg.namespace, Pace.from_config(cfg))
        self.registry = RedisRegistry(self.redis, cfg.namespace, cfg.get("distributed.heartbeat.staleThresholdMs"))
        self.stop = stop or threading.Event()
        self._github = github
        self.client: GitHubClient | None = None
        self.ops: IssueOps | None = None
        self.lease: Lease | None = None
        self.failures = 0
        self.item_failures: dict[str, int] = {}  # item name -> flushes in a row it failed in Sentinel itself
        self.next_try = 0.0
        self.last_reconcile = time.time()
        self.last_prune = 0.0
        self.last_error: str | None = None
        self.down = False  # the last failure was GitHub not answering (5xx, no connection)
        self.last_probe = 0.0

    # -- leadership --------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.lease is not None and not self.lease.lost

    def lead(self) -> bool:
        if self.is_leader:
            if time.monotonic() - self.lease.renewed_at > self.ttl / 2.0 and not self.lease.renew():
                self.lease = None
                return False
            return True
        self.lease = None
        try:
            self.lease = try_acquire(LEASE_NAME, self.ttl, worker=self.worker_id)
        except LockContended:
            return False
        self.state.set_meta(writer_token=self.lease.token, leader=self.actor)
        self.budget.load()
        if self.ops is not None:
            self.ops.reset()
        self.next_try = 0.0
        logger.info("sentinel: %s now runs the GitHub mirror (token %s)", self.actor, self.lease.token)
        return True

    def fenced(self) -> bool:
        """True if another mirror took over: this one must not write."""
        if not self.is_leader:
            return True
        token = self.redis.hget(self.state.key("meta"), "writer_token")
        return token is not None and int(token) != self.lease.token

    def release(self) -> None:
        release_quietly(self.lease)
        self.lease = None

    # -- GitHub ------------------------------------------------------------------------------
    def _client(self) -> GitHubClient:
        if self.client is None:
            self.client = GitHubClient(self.cfg, self.budget, max_wait=max(self.flush_s, 2.0), stop=self.stop,
                                       github=self._github)
            self.ops = IssueOps(self.client, self.state)
        return self.client

    # -- one flush ---------------------------------------------------------------------------
    def step(self, *, force: bool = False) -> dict | None:
        """If leader: one flush. Returns what it did, or None when another process leads."""
        if not self.lead():
            return None
        if self.redis.hget(self.state.key("meta"), "sync_requested"):
            self.redis.hdel(self.state.key("meta"), "sync_requested")
            force = True
        return self.flush(force=force)

    def flush(self, *, force: bool = False) -> dict:
        started = time.time()
        result = {"folded": self.state.drain(), "works": 0, "done": 0, "rejected": 0, "deferred": 0,
                  "error": None}
        if not configured(self.cfg):
            result["error"] = "GitHub is not configured"
            return self._finish(result, started)
        if started < self.next_try and not force and not self._back_up(started):
            result["error"] = f"waiting {self.next_try - started:.0f}s after: {self.last_error}"
            return self._finish(result, started)
        try:
            client = self._client()
        except (NotConfigured, AuthFailed) as exc:
            return self._failed(result, started, exc)
        except Exception as exc:  # e.g. a GitHub App key that cannot be used
            return self._failed(result, started, GitHubError(f"cannot set up the GitHub client: {exc}"))
        ctx = Context(self.cfg, client, self.state, self.ops, cold=not self.state.warm(), now=started)
        try:
            if force or (self.reconcile_s > 0 and started - self.last_reconcile > self.reconcile_s):
                self.reconcile(ctx)
            works = self.plan(ctx)
        except GitHubError as exc:
            return self._failed(result, started, exc)
        result["works"] = sum(1 for w in works if w.run is not None)
        deadline = started + max(self.flush_s, 1.0)
        failed_fields: set[str] = set()
        written_at: dict[str, int] = {}
        ok: list[Work] = []
        aborted: GitHubError | None = None
        for w in works:
            if aborted is not None or (w.run is not None and time.time() > deadline and not force) or self.stop.is_set():
                failed_fields.update(p.field for p in w.covers)
                result["deferred"] += 1 if w.run is not None else 0
                continue
            if w.run is not None and self.fenced():
                aborted = GitHubError("another mirror took over")
                failed_fields.update(p.field for p in w.covers)
                continue
            try:
                if w.run is not None:
                    w.run()
                if w.on_success is not None:
                    w.on_success()
                ok.append(w)
                finished = int(time.time() * 1000)
                for p in w.covers:
                    written_at[p.field] = finished
            except (Unavailable, RateLimited, AuthFailed) as exc:
                aborted = exc
                failed_fields.update(p.field for p in w.covers)
            except (NotFound, Rejected, Forbidden) as exc:
                logger.warning("sentinel: GitHub refused %s: %s", w.name, exc)
                self.state.reject(w.covers, str(exc))
                result["rejected"] += 1
            except redis.RedisError:
                raise
            except Exception as exc:  # a bug in one item must not stop the others
                if self._item_failed(w, exc):
                    result["rejected"] += 1
                else:
                    failed_fields.update(p.field for p in w.covers)
        for w in ok:
            self.item_failures.pop(w.name, None)
        done = {p.field: p for w in ok for p in w.covers if p.field not in failed_fields}
        self.state.done(done.values(), written_at_ms=written_at)
        result["done"] = sum(1 for w in ok if w.run is not None)
        if aborted is not None:
            return self._failed(result, started, aborted)
        self.failures = 0
        self.down = False
        self.last_error = None
        if ctx.cold:
            self.state.mark_warm()
        if started - self.last_prune > 3600:
            self.last_prune = started
            self.state.prune()
        return self._finish(result, started)

    def _item_failed(self, w: Work, exc: Exception) -> bool:
        """Count a failure of ``w`` in Sentinel itself; True when it was given up (rejected)."""
        n = self.item_failures[w.name] = self.item_failures.get(w.name, 0) + 1
        reason = f"{type(exc).__name__}: {exc}"
        if n == 1:
            logger.exception("sentinel: mirroring %s failed; it is retried %d more time(s)", w.name,
                             ITEM_ATTEMPTS - 1)
        if n < ITEM_ATTEMPTS:
            self.last_error = f"{w.name}: {reason}"
            return False
        logger.error("sentinel: giving up mirroring %s after %d failed flushes (%s); recorded in github:rejected",
                     w.name, n, reason)
        self.item_failures.pop(w.name, None)
        self.state.reject(w.covers, f"failed {n} times in Sentinel: {reason}")
        return True

    def plan(self, ctx: Context) -> list[Work]:
        pending = self.state.pending()
        works = (tasks.plan(ctx, pending) + workers.plan(ctx, pending, self.registry)
                 + dashboard.plan_alerts(ctx, pending) + dashboard.plan_dashboard(ctx, pending, self.registry))
        known = {p.field for w in works for p in w.covers}
        other = [p for p in pending if p.field not in known]  # kinds nobody mirrors: do not keep them
        if other:
            works.append(Work(3, "events of other kinds", None, other))
        # by priority, then oldest first: what a short flush deferred goes ahead of what came since
        return sorted(works, key=lambda w: (w.priority, min((p.first for p in w.covers if p.first), default=float("inf"))))

    def reconcile(self, ctx: Context) -> None:
        """Re-read the issues Sentinel owns (conditional GETs); forget what changed by hand."""
        self.last_reconcile = ctx.now
        owned = {**self.state.all_objects("worker:"), **self.state.all_objects("alert:")}
        dash = self.state.object("dashboard")
        if dash:
            owned["dashboard"] = dash
        for obj_id, obj in owned.items():
            if not obj.get("number"):
                continue
            try:
                resp = ctx.client.request("GET", f"issues/{obj['number']}", etag=obj.get("etag"))
            except NotFound:
                obj = {k: v for k, v in obj.items() if k not in ("number", "digest", "fp", "comments")}
                self.state.put_object(obj_id, obj)
                continue
            if resp.status == 304:
                continue
            obj["etag"] = resp.etag
            if (render.digest(resp.data.get("body") or "") != obj.get("body_digest")
                    or (resp.data.get("state") == "open") != bool(obj.get("open"))):
                obj.update(open=resp.data.get("state") == "open", fp=None, digest=None, written=0)
            self.state.put_object(obj_id, obj)

    def _back_up(self, now: float) -> bool:
        """While backing off from an outage: is GitHub answering again? (``GET /rate_limit``, at most
        once per flush interval or second; GitHub does not count it against the rate limit.) So the
        mirror resumes within a flush of GitHub's return instead of sitting out its back-off."""
        if not self.down or now - self.last_probe < max(self.flush_s, 1.0) or self.client is None:
            return False
        self.last_probe = now
        try:
            self.client.request("GET", "/rate_limit")
        except GitHubError:
            return False
        logger.info("sentinel: GitHub answers again; the mirror resumes")
        return True

    def _failed(self, result: dict, started: float, exc: GitHubError) -> dict:
        self.failures += 1
        self.down = isinstance(exc, Unavailable)
        if isinstance(exc, RateLimited) and exc.until:
            self.next_try = max(exc.until, self.budget.blocked_until)
        elif isinstance(exc, (AuthFailed, NotConfigured, Forbidden)):
            self.next_try = time.time() + self.retry_max_s
        else:
            self.next_try = time.time() + min(self.flush_s * 2 ** min(self.failures, 10), self.retry_max_s)
        message = str(exc)
        if isinstance(exc, AuthFailed):
            message = (f"GitHub rejected the credentials ({exc}); check GITHUB_TOKEN / the GitHub App settings. "
                       f"The mirror keeps the outbox and retries every {self.retry_max_s:.0f}s")
        if message != self.last_error:
            if isinstance(exc, (AuthFailed, NotConfigured, Forbidden)):
                log = logger.error
            elif isinstance(exc, RateLimited) and exc.status is None:
                log = logger.info  # our own pacing: expected under load, not a problem
            else:
                log = logger.warning
            log("sentinel: GitHub mirror: %s", message)
        self.last_error = message
        result["error"] = message
        return self._finish(result, started)

    def _finish(self, result: dict, started: float) -> dict:
        now = time.time()
        fields = {"last_flush": now, "last_flush_ms": int((now - started) * 1000), "last_error": self.last_error,
                  "leader": self.actor}
        if result.get("done"):
            self.state.count("written", result["done"])
        self.state.set_meta(**fields)
        try:
            status = mirror_status(self.cfg, self.redis)
            self.redis.hset(f"{self.cfg.namespace}github:status", mapping={
                "outbox_depth": status["outbox_depth"], "lag_seconds": status["lag_seconds"], "last_flush": now})
        except redis.RedisError:
            pass
        return result

    # -- loop --------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            run_step(self.step, "GitHub mirror")
            self.stop.wait(max(self.flush_s - (time.monotonic() - began), 0.01))
        self.release()


class MirrorThread(DutyThread):
    stop_timeout = 10.0

    def __init__(self, mirror: Mirror):
        super().__init__("sentinel-github-mirror", stopping=mirror.stop)
        self.mirror = mirror

    def run(self) -> None:
        self.mirror.run()


# -- status (for `sentinel github status`, metrics, alerts) ----------------------------------------
def _percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(int(round(q * (len(values) - 1))), len(values) - 1)]


def mirror_status(cfg: Config, client: redis.Redis | None = None) -> dict | None:
    """The mirror's status as plain data, or None when GitHub is not configured and no mirror ever ran."""
    client = client or get_redis(cfg.redis_url)
    state = MirrorState(client, cfg.namespace)
    pipe = client.pipeline(transaction=False)
    pipe.xlen(state.stream)
    pipe.xrange(state.stream, "-", "+", count=1)
    pipe.hlen(state.key("pending"))
    pipe.hgetall(state.key("meta"))
    pipe.hgetall(f"{cfg.namespace}github:status")
    pipe.lrange(state.key("lag"), 0, 999)
    stream_len, first, pending_len, meta, status, lags = pipe.execute()
    if not configured(cfg) and not meta and not stream_len:
        return None
    budget = Budget(client, cfg.namespace, Pace.from_config(cfg)).load().snapshot()
    now_ms = time.time() * 1000
    oldest = []
    if first:
        oldest.append(int(first[0][0].split("-")[0]))
    if pending_len:
        firsts = [m for m in (state.oldest_pending_ms(),) if m]
        oldest.extend(firsts)
    lag_values = [int(x) for x in lags]
    requests = {k.split(":", 1)[1]: int(v) for k, v in status.items() if k.startswith("requests:")}

    def num(d, k, cast=float):
        try:
            return cast(d[k]) if d.get(k) not in (None, "") else None
        except ValueError:
            return None
    return {
        "configured": configured(cfg),
        "leader": meta.get("leader") or None,
        "outbox_depth": int(stream_len) + int(pending_len),
        "stream_depth": int(stream_len),
        "pending_objects": int(pending_len),
        "last_flush": num(meta, "last_flush"),
        "last_flush_ms": num(meta, "last_flush_ms", int),
        "lag_seconds": round(max(now_ms - min(oldest), 0) / 1000.0, 3) if oldest else 0.0,
        "lag_p50_seconds": round(_percentile(lag_values, 0.5) / 1000.0, 3) if lag_values else None,
        "lag_p95_seconds": round(_percentile(lag_values, 0.95) / 1000.0, 3) if lag_values else None,
        "requests": requests,
        "requests_total": sum(requests.values()),
        **budget,
        "folded": num(meta, "folded", int) or 0,
        "dropped": num(meta, "dropped", int) or 0,
        "rejected": num(meta, "rejected", int) or 0,
        "written": num(meta, "written", int) or 0,
        "last_error": meta.get("last_error") or None,
    }


def request_sync(cfg: Config, client: redis.Redis | None = None) -> None:
    (client or get_redis(cfg.redis_url)).hset(f"{cfg.namespace}github:meta", "sync_requested", int(time.time()))

