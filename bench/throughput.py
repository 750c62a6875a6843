"""Throughput: plain Celery (stock settings) vs the Sentinel app, in one run, same broker and concurrency.

Each variant gets its own Redis database and a fresh worker process; the client sends N noop tasks
and waits for every result. Rounds alternate between variants and the median is reported, with the
ratio against plain Celery measured in the same run.

    python bench/throughput.py [--tasks 2000] [--rounds 5] [--concurrency 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery import Celery  # noqa: E402
from celery.result import ResultSet  # noqa: E402

from sentinel_celery.cluster.processes import start_worker, wait_for  # noqa: E402
from sentinel_celery.config import load_config  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from sentinel_celery.plugin import create_app  # noqa: E402


def db_url(base: str, db: int) -> str:
    return base.rsplit("/", 1)[0] + f"/{db}"


VARIANTS = {
    # name: (celery -A target, task name, queue, redis db)
    "plain celery": ("bench.apps:plain_app", "bench.plain_noop", None, 13),
    "sentinel": ("bench.apps:sentinel_app", "bench.sentinel_noop", "build", 14),
    "sentinel + lease/task": ("bench.apps:sentinel_app", "bench.sentinel_leased_noop", "build", 15),
    # Flower's task pages need task events: what -E (or monitoring.taskEvents) costs
    "sentinel + task events": ("bench.apps:sentinel_app", "bench.sentinel_noop", "build", 12),
}
WORKER_EXTRA = {"sentinel + task events": ["-E"]}


def run_variant(name: str, base_url: str, n: int, concurrency: int, log_dir: Path) -> float:
    target, task_name, queue, db = VARIANTS[name]
    url = db_url(base_url, db)
    redis.Redis.from_url(url).flushdb()
    env = {"BENCH_PLAIN_URL": url, "REDIS_URL": url, "SENTINEL_CONFIG_DIR": str(ROOT / "config"),
           "SENTINEL_NAMESPACE": "bench:", "PYTHONPATH": str(ROOT)}
    if queue is None:
        app = Celery("bench_client_plain", broker=url, backend=url)
    else:
        app = create_app("bench_client_sentinel", config=load_config(environ=env))
    worker = start_worker(f"bench-{db}", env=env, log_dir=log_dir, app=target, concurrency=concurrency,
                          queues=[queue] if queue else None, loglevel="WARNING", extra=WORKER_EXTRA.get(name, ()))
    try:
        client = redis.Redis.from_url(url)
        wait_for(lambda: client.exists("_kombu.binding.celery") or not worker.alive(), 60,
                 message=f"{name} worker")
        options = {"job_type": queue} if queue else {}
        app.send_task(task_name, kwargs={"i": -1}, **options).get(timeout=60)  # warm: worker consuming
        started = time.perf_counter()
        results = ResultSet([app.send_task(task_name, kwargs={"i": i}, **options) for i in range(n)])
        results.join_native(timeout=300, propagate=True)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop(timeout=30)
        app.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--only", action="append", choices=list(VARIANTS),
                        help="Run only these variants (plain Celery always runs: it is the baseline).")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if not args.only or v in args.only or v == "plain celery"]
    base, server = ensure_redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    rates: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as logs:
        try:
            for r in range(args.rounds):
                for variant in variants:
                    rate = run_variant(variant, base, args.tasks, args.concurrency, Path(logs))
                    rates[variant].append(rate)
                    print(f"round {r + 1}: {variant:<24} {rate:8.0f} tasks/s", flush=True)
        finally:
            if server:
                server.stop()
    base_rate = statistics.median(rates["plain celery"])
    print(f"\n{args.tasks} noop tasks x {args.rounds} rounds, concurrency {args.concurrency} (prefork), "
          f"median tasks/s and ratio to plain Celery:")
    print(f"{'variant':<24} {'tasks/s':>8} {'ratio':>6}  target")
    targets = {"plain celery": "", "sentinel": ">= 0.90", "sentinel + lease/task": ">= 0.85",
               "sentinel + task events": "(informative)"}
    for variant, values in rates.items():
        median = statistics.median(values)
        print(f"{variant:<24} {median:8.0f} {median / base_rate:6.2f}  {targets[variant]}")


if __name__ == "__main__":
    main()
