"""Redis failover: kill -9 of the Redis primary under load, stock Celery on ``sentinel://`` vs Sentinel.

For each set-up, a fresh Redis Sentinel deployment on loopback (1 primary, 1 replica, 3 sentinels,
down-after-milliseconds 2000, failover-timeout 10000), two workers (concurrency 2), and a sender
that publishes --tasks tasks of 0.3 s, one every 50 ms, sending a task again (same id) while a
publish fails. Once --kill-after tasks have ended, the primary is killed with SIGKILL. Measured:

  switch         kill -> the sentinels name a new primary that answers as one
  first task     kill -> the end of the first task that started after the kill
  lost           tasks whose publish returned (acknowledged to the sender) that never ended
                 within --settle seconds after the last publish
  twice          tasks that ended more than once

    python bench/redis_failover.py [--tasks 100] [--kill-after 30] [--settle 40] [--rounds 1]

Set-ups (bench/redis_failover_apps.py): stock Celery 5.7 (kombu's sentinel transport, Celery's
sentinel result backend, acks_late + reject_on_worker_lost) and Sentinel (REDIS_URL=redis+sentinel://,
every task holding a lease).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from sentinel_celery.cluster.processes import start_worker, wait_for  # noqa: E402
from sentinel_celery.config import load_config, set_config  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from sentinel_celery.ops.redis_ha import RedisHA  # noqa: E402
from sentinel_celery.plugin import create_app  # noqa: E402
from sentinel_celery.redis_url import (  # noqa: E402
    kombu_sentinel_url,
    kombu_transport_options,
    parse_sentinel_url,
)

VARIANTS = {
    "stock": "stock Celery 5.7, sentinel:// transport",
    "sentinel": "Sentinel, redis+sentinel:// (leased tasks)",
}


def publisher(variant: str, url: str) -> Celery:
    """The sender's app: Sentinel's own for Sentinel, plain Celery on kombu's sentinel:// for stock."""
    if variant == "sentinel":
        set_config(load_config())
        return create_app("bench_redis_failover_client")
    parsed = parse_sentinel_url(url)
    app = Celery("bench_redis_failover_client", broker=kombu_sentinel_url(parsed))
    app.conf.broker_transport_options = kombu_transport_options(parsed)
    return app


def run_variant(variant: str, witness_url: str, args, workdir: Path) -> dict:
    prefix = f"benchrf-{uuid.uuid4().hex[:8]}:"
    witness = redis.Redis.from_url(witness_url, decode_responses=True)
    result: dict = {"variant": variant}
    config_dir = workdir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "shared.json").write_text(json.dumps({"redis": {"failoverWaitSeconds": 30}}))
    ha = RedisHA(workdir / "redis")
    procs = []
    app = None
    try:
        ha.start()
        env = {"BENCH_RF_VARIANT": variant, "BENCH_RF_WITNESS": witness_url, "BENCH_RF_PREFIX": prefix,
               "REDIS_URL": ha.url, "SENTINEL_CONFIG_DIR": str(config_dir), "SENTINEL_NAMESPACE": prefix,
               "SENTINEL_BROKER_PREFIX": prefix}
        os.environ.update(env)
        procs = [start_worker(f"{variant}-{i}", env=env, log_dir=workdir, app="bench.redis_failover_apps",
                              queues=["build"], concurrency=2, loglevel="INFO") for i in (1, 2)]
        for proc in procs:
            wait_for(lambda proc=proc: "ready." in proc.log() or not proc.alive(), 90, message="a worker ready")
        app = publisher(variant, ha.url)
        time.sleep(1.0)

        acknowledged: dict[str, float] = {}
        send_errors = 0

        def send_all():
            nonlocal send_errors
            for n in range(args.tasks):
                while True:
                    try:
                        app.send_task("bench.rf.job", kwargs={"n": n}, task_id=f"rf-{n}", queue="build")
                        acknowledged[f"rf-{n}"] = time.time()
                        break
                    except Exception:
                        send_errors += 1
                        time.sleep(0.2)
                time.sleep(0.05)

        def runs():
            return [json.loads(r) for r in witness.lrange(prefix + "runs", 0, -1)]

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        wait_for(lambda: sum(r["phase"] == "end" for r in runs()) >= args.kill_after, 60, 0.1, "tasks to end")
        killed_at = time.time()
        old = ha.kill_primary()
        ha.wait_switch(old, timeout=60)
        result["switch_s"] = time.time() - killed_at
        sender.join(timeout=120)
        ended = lambda: {f"rf-{r['n']}" for r in runs() if r["phase"] == "end"}  # noqa: E731
        deadline = time.time() + args.settle
        while time.time() < deadline and not ended() >= set(acknowledged):
            time.sleep(0.25)
        all_runs = runs()
        started_after = {r["n"] for r in all_runs if r["phase"] == "start" and r["at"] > killed_at}
        ends_after = [r["at"] for r in all_runs if r["phase"] == "end" and r["n"] in started_after]
        result["first_task_s"] = min(ends_after) - killed_at if ends_after else None
        counts: dict[int, int] = {}
        for r in all_runs:
            if r["phase"] == "end":
                counts[r["n"]] = counts.get(r["n"], 0) + 1
        result["acknowledged"] = len(acknowledged)
        result["lost"] = len({int(t.split("-")[1]) for t in acknowledged} - set(counts))
        result["twice"] = sum(1 for c in counts.values() if c > 1)
        result["send_retries"] = send_errors
    except Exception as exc:  # report, do not hide the other set-up
        result["error"] = repr(exc)
    finally:
        if app is not None:
            app.close()
        for proc in procs:
            proc.kill9()
        ha.stop()
        keys = list(witness.scan_iter(match=prefix + "*"))
        if keys:
            witness.delete(*keys)
    return result


def median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--kill-after", type=int, default=30, help="tasks ended before the primary is killed")
    parser.add_argument("--settle", type=float, default=40, help="seconds after the last publish for tasks to end")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both set-ups, interleaved")
    parser.add_argument("--only", choices=sorted(VARIANTS), action="append")
    args = parser.parse_args()
    witness_url, server = ensure_redis(os.environ.get("BENCH_WITNESS_URL") or "redis://127.0.0.1:6379/0")
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    started = time.time()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_no in range(args.rounds):
                for variant in args.only or VARIANTS:
                    r = run_variant(variant, witness_url, args, Path(tmp) / f"{variant}-{round_no}")
                    results[variant].append(r)
                    print(json.dumps(r), flush=True)
    finally:
        if server:
            server.stop()
    print(f"\nkill -9 of the Redis primary after {args.kill_after} of {args.tasks} tasks ended "
          f"({args.rounds} round(s), run took {time.time() - started:.0f} s; median over rounds)")
    print(f"{'set-up':<46} {'switch':>8} {'first task':>11} {'lost':>9} {'twice':>6}")
    for variant, label in VARIANTS.items():
        rows = [r for r in results[variant] if "error" not in r]
        for r in results[variant]:
            if "error" in r:
                print(f"{label:<46} error: {r['error']}")
        if not rows:
            continue
        print(f"{label:<46} {median(rows, 'switch_s'):>7.1f}s {median(rows, 'first_task_s'):>10.1f}s "
              f"{int(median(rows, 'lost')):>4}/{rows[0]['acknowledged']:<4} {int(median(rows, 'twice')):>6}")


if __name__ == "__main__":
    main()
