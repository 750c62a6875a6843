"""GitHub budget: what a real cluster costs in GitHub requests, counted by the hub's request log.

N built-in jobs (``workers.build.run`` / ``workers.test.run`` running ``true``) across several real
worker processes; a share of them carries ``github_issue`` (spread over a few issues) and/or ``sha``
(one commit). The mirror runs inside the workers with its default pace (1 write/s, 60/min) against
an in-process ``sentinel hub`` with GitHub's default limits. Reported: requests per 1,000 tasks
(total and without the fixed per-cluster cost of worker issues and the dashboard), peak writes in
any minute, and the mirror lag (first event of an object → its write) p50/p95.

    python bench/github_budget.py [--tasks 1000] [--duration 60] [--workers 3] [--linked 0.01] [--issues 2]
                                  [--flush-ms 5000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery.result import ResultSet  # noqa: E402

from bench.hubcluster import forget_namespace, hub_cluster_env  # noqa: E402
from sentinel_celery.cluster.processes import start_worker, wait_for  # noqa: E402
from sentinel_celery.github.mirror import mirror_status  # noqa: E402
from sentinel_celery.hub import Hub  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from sentinel_celery.plugin import create_app  # noqa: E402

WRITES = ("POST", "PATCH", "PUT", "DELETE")


def peak_per_minute(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 60:
            start += 1
        best = max(best, end - start + 1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--linked", type=float, default=0.01, help="share of tasks with github_issue and sha")
    parser.add_argument("--issues", type=int, default=2, help="issues the linked tasks are spread over")
    parser.add_argument("--flush-ms", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=60.0, help="spread the submissions over this many seconds")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    base, server = ensure_redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    ns = f"ghb-{uuid.uuid4().hex[:8]}:"
    hub = Hub().start()
    client = redis.Redis.from_url(base, decode_responses=True)
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        env, cfg = hub_cluster_env(tmp, base, ns, hub, {"github": {"mirror": {"flushIntervalMs": args.flush_ms}}})
        app = create_app("bench_github_client", config=cfg)
        try:
            repo = hub.client().get_repo(hub.repo)
            issues = [repo.create_issue(f"PR {i}").number for i in range(args.issues)]
            sha = repo.get_commit("main").sha
            for i in range(args.workers):
                procs.append(start_worker(f"gb{i}", env=env, log_dir=Path(tmp), concurrency=args.concurrency,
                                          queues=["build", "test"], loglevel="WARNING"))
            wait_for(lambda: client.zcard(f"{ns}workers") == args.workers, 60, message="workers")
            since = hub.log.last_seq
            started = time.time()
            every = max(int(round(1 / args.linked)), 1) if args.linked > 0 else 0
            results, linked = [], 0
            for n in range(args.tasks):
                kwargs = {"argv": ["true"]}
                if every and n % every == 0:
                    kwargs.update(github_issue=issues[linked % len(issues)], sha=sha)
                    linked += 1
                name = "workers.build.run" if n % 2 == 0 else "workers.test.run"
                results.append(app.send_task(name, kwargs=kwargs))
                pause = started + args.duration * (n + 1) / args.tasks - time.time()
                if pause > 0:
                    time.sleep(pause)
            ResultSet(results).join_native(timeout=args.timeout, propagate=False)
            tasks_done = time.time()
            # bounded: wait until every event of the run has been mirrored
            wait_for(lambda: (lambda st: st["outbox_depth"] == 0 and (st["last_flush"] or 0) > tasks_done)(
                mirror_status(cfg)), args.timeout, interval=0.5, message="the outbox to drain")
            drained = time.time()
            used = hub.requests(since=since)
            status = mirror_status(cfg)
        finally:
            for p in procs:
                p.stop(timeout=30)
            app.close()
            hub.stop()
            forget_namespace(client, ns)
            if server:
                server.stop()

    writes = [r for r in used if r.method in WRITES]
    def linked_request(r) -> bool:  # issue comments edited here are the linked issues' status comments
        return ("/statuses/" in r.path or "/issues/comments/" in r.path
                or any(r.path.endswith(f"/issues/{n}") or f"/issues/{n}/" in r.path for n in issues))
    fixed = [r for r in used if not linked_request(r)]
    lag_samples = status["lag_p50_seconds"], status["lag_p95_seconds"]
    per_k = 1000 / args.tasks
    by_kind: dict[str, int] = {}
    for r in used:
        kind = "statuses" if "/statuses/" in r.path else "linked issues" if linked_request(r) \
            else "worker issues + dashboard + look-ups"
        by_kind[f"{r.method} {kind}"] = by_kind.get(f"{r.method} {kind}", 0) + 1
    print(f"\n{args.tasks} tasks sent over {args.duration:g}s to {args.workers} workers x {args.concurrency}, {linked} linked "
          f"(github_issue over {len(issues)} issues + sha), flush {args.flush_ms} ms, default pace")
    print(f"tasks ran in {tasks_done - started:.1f}s; outbox drained {drained - tasks_done:.1f}s later")
    print(f"{'metric':<44} {'value':>10}  target")
    rows = [
        ("requests (total)", len(used), ""),
        ("requests per 1,000 tasks", round(len(used) * per_k, 1), "<= 20"),
        ("  of which per-cluster (workers, dashboard)", round(len(fixed) * per_k, 1), ""),
        ("  of which linked tasks (issues, statuses)", round((len(used) - len(fixed)) * per_k, 1), ""),
        ("writes (total)", len(writes), ""),
        ("peak writes in any minute", peak_per_minute([r.ts for r in writes]), "<= 60"),
        ("mirror lag p50 (s)", lag_samples[0], ""),
        ("mirror lag p95 (s)", lag_samples[1], f"<= {2 * args.flush_ms / 1000:g} (2 flushes)"),
        ("non-2xx/304 answers", sum(1 for r in used if r.status >= 400), "0"),
    ]
    for name, value, target in rows:
        print(f"{name:<44} {value!s:>10}  {target}")
    if os.environ.get("BENCH_VERBOSE"):
        for r in used:
            print(f"  {r.time} {r.method} {r.path} {r.status}")
    print("\nrequests by kind:")
    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<50} {v}")


if __name__ == "__main__":
    main()
