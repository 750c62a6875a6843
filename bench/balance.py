"""Load balancing: each strategy against plain pull, on workers with capacities 1, 2 and 4.

Three real workers (concurrency 1, 2, 4) consume the ``build`` queue and their direct queues. The
same seeded job list — mostly short tasks, some long ones — is sent once per strategy (per-call
``balance=``), in two arrival patterns: a burst (everything at once) and paced (Poisson arrivals at
about 60% of the cluster's capacity). Reported per strategy: makespan (first send to last finish),
utilization spread (max − min over workers of busy time ÷ (slots × makespan)), and schedule-to-start
latency (p50 / p95 / max), plus the share of tasks the balancer placed on a direct queue.

    python bench/balance.py [--tasks 60] [--rounds 1] [--prefetch 1] [--patterns burst,paced]

Sleep tasks use no CPU, so the figures measure scheduling, not the machine; expect a few percent of
noise between runs on a busy host. Bounded: about 20 s per strategy and pattern per round.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from sentinel_celery.cluster.processes import start_worker, wait_for  # noqa: E402
from sentinel_celery.config import load_config, set_config  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402

STRATEGIES = ("pull", "round_robin", "least_loaded", "capacity_based", "affinity")
CAPACITIES = {"bw1": 1, "bw2": 2, "bw4": 4}


def jobs_for(n: int, short: float, long: float, long_share: float, seed: int = 7) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    return [(long if rng.random() < long_share else short, f"p{rng.randrange(6)}") for _ in range(n)]


def gaps_for(jobs, load: float, slots: int, seed: int = 11) -> list[float]:
    rng = random.Random(seed)
    mean = statistics.mean(d for d, _ in jobs)
    rate = load * slots / mean  # tasks per second
    return [rng.expovariate(rate) for _ in jobs]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_once(app, client, ns, strategy, jobs, gaps, slots_by_worker, idle_wait):
    runs_key = f"{ns}bench:runs"
    client.delete(runs_key, f"{ns}balancer:placements")
    sent = {}
    t0 = time.time()
    due = t0
    for i, (seconds, project) in enumerate(jobs):
        if gaps:
            due += gaps[i]
            time.sleep(max(0.0, due - time.time()))
        sent[i] = time.time()
        app.send_task("bench.balance_sleep", args=[i, seconds], kwargs={"project_id": project}, balance=strategy)
    wait_for(lambda: client.llen(runs_key) >= len(jobs), 300, message=f"{strategy}: all tasks to finish")
    records = [json.loads(r) for r in client.lrange(runs_key, 0, -1)]
    placed = {k: int(v) for k, v in client.hgetall(f"{ns}balancer:placements").items()}
    time.sleep(idle_wait)  # let every worker report itself idle before the next strategy
    first, last = min(sent.values()), max(r["end"] for r in records)
    makespan = last - first
    busy = {w: 0.0 for w in slots_by_worker}
    for r in records:
        busy[r["worker"]] += r["end"] - r["start"]
    util = {w: busy[w] / (slots_by_worker[w] * makespan) for w in slots_by_worker}
    latency = [r["start"] - sent[r["i"]] for r in records]
    direct = sum(v for k, v in placed.items() if k != "_type_queue")
    return {"makespan": makespan, "spread": max(util.values()) - min(util.values()),
            "util": util, "p50": percentile(latency, 0.5), "p95": percentile(latency, 0.95),
            "max": max(latency), "direct": direct / len(jobs), "count": len(records),
            "ran": {w: sum(1 for r in records if r["worker"] == w) for w in slots_by_worker}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=1, help="worker_prefetch_multiplier of the workers")
    parser.add_argument("--patterns", default="burst,paced")
    parser.add_argument("--short", type=float, default=0.1)
    parser.add_argument("--long", type=float, default=1.5)
    parser.add_argument("--long-share", type=float, default=0.2)
    parser.add_argument("--load", type=float, default=0.6, help="paced arrivals: offered load ÷ capacity")
    args = parser.parse_args()

    url, server = ensure_redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    ns = f"bench-balance-{uuid.uuid4().hex[:8]}:"
    config_dir = tempfile.mkdtemp(prefix="sentinel-bench-")
    env = {"REDIS_URL": url, "SENTINEL_NAMESPACE": ns, "SENTINEL_BROKER_PREFIX": ns, "SENTINEL_CONFIG_DIR": config_dir}
    os.environ.update(env)
    os.environ.pop("WORKER_ID", None)
    cfg = load_config()
    set_config(cfg)
    import bench.balance_tasks  # noqa: F401  (registers the task with the client app)
    from sentinel_celery.plugin import create_app
    app = create_app("sentinel_celery")
    client = redis.Redis.from_url(url, decode_responses=True)
    idle_wait = 2 * cfg.get("distributed.heartbeat.intervalMs") / 1000.0 + 0.5

    jobs = jobs_for(args.tasks, args.short, args.long, args.long_share)
    slots = sum(CAPACITIES.values())
    patterns = {"burst": None, "paced": gaps_for(jobs, args.load, slots)}
    work = sum(d for d, _ in jobs)
    print(f"{len(jobs)} tasks ({sum(1 for d, _ in jobs if d == args.long)} × {args.long}s, the rest × "
          f"{args.short}s; {work:.1f} slot-seconds of work) on workers with capacities "
          f"{', '.join(str(c) for c in CAPACITIES.values())} ({slots} slots, ideal makespan ≥ {work / slots:.2f}s); "
          f"prefetch multiplier {args.prefetch}; {args.rounds} round(s)", flush=True)

    procs = []
    with tempfile.TemporaryDirectory() as logs:
        try:
            for wid, c in CAPACITIES.items():
                procs.append(start_worker(wid, env=env, log_dir=Path(logs), queues=["build"], concurrency=c,
                                          include=["bench.balance_tasks"], loglevel="WARNING",
                                          extra=["--prefetch-multiplier", str(args.prefetch)]))
            for p in procs:
                wait_for(lambda p=p: client.zscore(f"{ns}workers", p.worker_id) is not None, 60,
                         message=f"worker {p.worker_id}")
            time.sleep(idle_wait)
            results: dict[tuple[str, str], list[dict]] = {}
            for r in range(args.rounds):
                for pattern in args.patterns.split(","):
                    for strategy in STRATEGIES:
                        res = run_once(app, client, ns, strategy, jobs, patterns[pattern], CAPACITIES, idle_wait)
                        results.setdefault((pattern, strategy), []).append(res)
                        print(f"round {r + 1} {pattern:<5} {strategy:<15} makespan {res['makespan']:5.2f}s  "
                              f"spread {res['spread']:.2f}  start p50 {res['p50'] * 1000:5.0f}ms "
                              f"p95 {res['p95'] * 1000:5.0f}ms  direct {res['direct']:.0%}  ran {res['ran']}",
                              flush=True)
        finally:
            for p in procs:
                p.stop(timeout=30)
            for key in client.scan_iter(match=f"{ns}*", count=1000):
                client.delete(key)
            if server:
                server.stop()

    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    print("\n| pattern | strategy | makespan (s) | util. spread | start p50 (ms) | start p95 (ms) | start max (ms) "
          "| placed direct | tasks run on c1 / c2 / c4 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (pattern, strategy), rs in results.items():
        ran = " / ".join(str(round(statistics.median(r["ran"][w] for r in rs))) for w in CAPACITIES)
        print(f"| {pattern} | {strategy} | {med(rs, 'makespan'):.2f} | {med(rs, 'spread'):.2f} | "
              f"{med(rs, 'p50') * 1000:.0f} | {med(rs, 'p95') * 1000:.0f} | {med(rs, 'max') * 1000:.0f} | "
              f"{med(rs, 'direct'):.0%} | {ran} |")


if __name__ == "__main__":
    main()
