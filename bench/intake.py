"""Intake latency and cost: from a comment on the hub to the job starting on a worker, and GitHub requests per event.

An in-process ``sentinel hub`` and one real worker (queues build/test/deploy). For each mode —
webhooks (the hub's real signed deliveries to ``IntakeService``) and polling (``pollIntervalMs``) —
N comments ``/build`` are posted one after another (each after a random pause of up to one poll interval,
so comments land at any moment of a poll cycle), by a user with write access, on a few issues; each
job runs ``date +%s.%N`` on the worker, so its output is the moment the command started. Latency =
that moment − just before the comment was posted. The baseline, in the same run: ``send_task`` of the
same job straight from Python (what the intake adds is the difference). GitHub requests per event are
the intake token's requests in the hub's log (permission lookups, polls), the mirror being off.

    python bench/intake.py [--events 50] [--poll-ms 1000] [--issues 5]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.hubcluster import forget_namespace, hub_cluster_env  # noqa: E402
from sentinel_celery.cluster.processes import start_worker, wait_for  # noqa: E402
from sentinel_celery.hub import Hub  # noqa: E402
from sentinel_celery.intake.duty import IntakeService  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from sentinel_celery.plugin import create_app  # noqa: E402

SECRET = "bench-secret"
DATE = ["date", "+%s.%N"]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(round(q * (len(values) - 1))), len(values) - 1)]


def started_at(app, task_id: str, timeout: float = 60) -> float:
    result = app.AsyncResult(task_id).get(timeout=timeout)
    return float(result["output_tail"].strip().splitlines()[-1])


def run_mode(mode: str, app, cfg, hub: Hub, dev_repo, issues: list[int], events: int, intake_label: str,
             jitter: float) -> dict:
    service = IntakeService(app, cfg, mode=mode, port=0)
    tasks: dict[int, list[str]] = {}
    handle = service.intake.handle

    def recording(event, payload, delivery=""):  # instrumentation: which comment became which task
        outcome = handle(event, payload, delivery)
        if event == "issue_comment" and outcome.task_ids:
            tasks[int(payload["comment"]["id"])] = outcome.task_ids
        return outcome
    service.intake.handle = recording
    hook = hub.add_webhook(service.url, SECRET) if mode == "webhook" else None
    service.start()
    try:
        if mode == "poll":
            wait_for(lambda: service.client.hgetall(service.intake.ns + "intake:poll"), 30, message="first poll")
        since = hub.log.last_seq
        latencies = []
        for n in range(events):
            issue = dev_repo.get_issue(issues[n % len(issues)])
            time.sleep(random.uniform(0, jitter))  # comments come at any moment of a poll interval
            posted = time.time()
            comment_id = issue.create_comment("/build").id
            ids = wait_for(lambda c=comment_id: tasks.get(c), 60, interval=0.005, message="the job to be sent")
            latencies.append(started_at(app, ids[0]) - posted)
        used = [r for r in hub.requests(since=since) if r.token == intake_label]
    finally:
        service.stop()
        if hook is not None:
            hub.webhooks._hooks.remove(hook)  # this bench's next mode must not get webhooks too
    counted = [r for r in used if r.status != 304]  # a 304 costs no rate limit
    return {"p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95), "requests": len(used),
            "per_event": len(counted) / events, "all_per_event": len(used) / events, "n": events}


def baseline(app, events: int) -> dict:
    latencies = []
    for _ in range(events):
        sent = time.time()
        result = app.send_task("workers.build.run", kwargs={"argv": DATE})
        latencies.append(started_at(app, result.id) - sent)
    return {"p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95), "n": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--poll-ms", type=int, default=1000)
    parser.add_argument("--issues", type=int, default=5)
    args = parser.parse_args()

    base, server = ensure_redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    ns = f"bi-{uuid.uuid4().hex[:8]}:"
    # the bench posts 100 comments in a few minutes: lift the secondary write limits for its "human" poster
    hub = Hub(limits={"writes_per_minute": 100_000, "writes_per_hour": 1_000_000}).start()
    client = redis.Redis.from_url(base, decode_responses=True)
    worker = None
    with tempfile.TemporaryDirectory() as tmp:
        shared = {"github": {"webhookSecret": SECRET, "mirror": {"inWorkers": False}, "intake": {
            "pollIntervalMs": args.poll_ms, "maxCommandsPerIssuePerMinute": 10_000,
            "templates": {"build": {"type": "build", "argv": DATE}},
            "rules": [{"on": "issue_comment", "command": "/build", "template": "build"},
                      {"on": "label", "prefix": "sentinel:run-"}]}}}  # a label rule: labels are polled too
        env, cfg = hub_cluster_env(tmp, base, ns, hub, shared)
        app = create_app("bench_intake", config=cfg)
        try:
            dev = hub.add_token(login="dev", access="write", label="dev")
            dev_repo = hub.client(dev).get_repo(hub.repo)
            issues = [dev_repo.create_issue(f"build tracker {i}").number for i in range(args.issues)]
            worker = start_worker("bi1", env=env, log_dir=Path(tmp), concurrency=2,
                                  queues=["build", "test", "deploy"], loglevel="WARNING")
            wait_for(lambda: client.zcard(f"{ns}workers") == 1, 60, message="the worker")
            baseline(app, 5)  # warm up: connections, the worker's pool
            label = next(p.label for p in hub.tokens.principals() if p.spec.token == hub.token)
            results = {"send_task (baseline)": baseline(app, args.events),
                       "webhook": run_mode("webhook", app, cfg, hub, dev_repo, issues, args.events, label,
                                           args.poll_ms / 1000),
                       f"poll {args.poll_ms} ms": run_mode("poll", app, cfg, hub, dev_repo, issues, args.events,
                                                           label, args.poll_ms / 1000)}
        finally:
            if worker is not None:
                worker.stop(timeout=30)
            app.close()
            hub.stop()
            forget_namespace(client, ns)
            if server:
                server.stop()

    base_p50 = results["send_task (baseline)"]["p50"]
    print(f"\n{args.events} events per mode, comment on the hub → `date` starting on a worker (1 worker, "
          f"{args.issues} issues)")
    print(f"{'mode':<22} {'p50 s':>8} {'p95 s':>8} {'p50/baseline':>13} {'req/event':>10} {'(incl. 304)':>11}  target")
    targets = {"webhook": "p95 <= 2 s, <= 2 req/event", f"poll {args.poll_ms} ms":
               f"p95 <= {args.poll_ms / 1000 + 2:g} s, <= 2 req/event", "send_task (baseline)": ""}
    for name, r in results.items():
        per = f"{r['per_event']:.2f}" if "per_event" in r else "-"
        every = f"{r['all_per_event']:.2f}" if "all_per_event" in r else "-"
        print(f"{name:<22} {r['p50']:>8.3f} {r['p95']:>8.3f} {r['p50'] / base_p50:>13.1f} {per:>10} {every:>11}  "
              f"{targets[name]}")
    print("req/event: the intake's GitHub requests that count against the rate limit (permission look-ups, polls "
          "answered 200); (incl. 304): with the conditional polls answered 304, which cost none")


if __name__ == "__main__":
    main()
