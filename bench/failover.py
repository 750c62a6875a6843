"""Failover: how fast a killed worker's task runs again, and whether a healthy long task runs twice.

Three set-ups side by side, in one run, each on its own Redis database (flushed first):

  stock      Celery 5.7 + Redis, acks_late + reject_on_worker_lost, default settings
  tuned      the same with visibility_timeout=10 s and kombu's unacked sweep every second
             (transport options unacked_restore_interval=1, unacked_restore_throttle=1)
  sentinel   the Sentinel app with the shipped config/shared.json (heartbeat 2 s, stale 6 s)

Each set-up runs two independent pairs of workers (concurrency 1, prefetch 1):
  * kill pair: a 300 s task starts on one worker, which is then killed with SIGKILL (main
    process and pool); we measure the seconds until the task starts again on the other worker,
    waiting at most --wait seconds;
  * healthy pair: a --healthy second task (longer than the tuned visibility timeout) runs on one
    worker while the other idles (and sweeps); we count how many times it starts in --window s.

    python bench/failover.py [--wait 120] [--healthy 20] [--window 40]

With ``--broker amqp://…`` it compares stock Celery and Sentinel on RabbitMQ instead (kill -9, SIGSTOP,
and a healthy job longer than consumer_timeout on a private node): see bench/failover_amqp.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from bench.failover_amqp import LABELS as AMQP_LABELS  # noqa: E402
from bench.failover_amqp import report as amqp_report  # noqa: E402
from bench.failover_amqp import run_amqp_variant  # noqa: E402
from sentinel_celery.cluster.processes import start_worker, wait_for  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from tests.rabbitmq_support import PrivateNode, port_answers  # noqa: E402

VARIANTS = {
    "stock": ("stock Celery (defaults)", 10),
    "tuned": ("stock Celery, visibility_timeout=10 s, 1 s sweep", 11),
    "sentinel": ("Sentinel (heartbeat 2 s, stale 6 s)", 12),
}


def db_url(base: str, db: int) -> str:
    return base.rsplit("/", 1)[0] + f"/{db}"


def runs(client: redis.Redis, tag: str) -> list[dict]:
    return [json.loads(r) for r in client.lrange(f"benchfo:runs:{tag}", 0, -1)]


def run_variant(variant: str, base_url: str, args, log_dir: Path, out: dict) -> None:
    label, db = VARIANTS[variant]
    url = db_url(base_url, db)
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {"BENCH_FO_VARIANT": variant, "BENCH_FO_URL": url, "REDIS_URL": url,
           "SENTINEL_CONFIG_DIR": str(ROOT / "config"), "SENTINEL_NAMESPACE": "benchfo:",
           "PYTHONPATH": str(ROOT)}
    names = {"kill": [f"{variant}-k1", f"{variant}-k2"], "healthy": [f"{variant}-h1", f"{variant}-h2"]}
    procs = {}
    result = out[variant] = {"label": label, "rerun_s": None, "rerun": False, "healthy_runs": None}
    try:
        for queue, ids in names.items():
            for wid in ids:
                procs[wid] = start_worker(wid, env=env, log_dir=log_dir, app="bench.failover_apps",
                                          queues=[queue], concurrency=1, loglevel="INFO")
        for wid, proc in procs.items():
            wait_for(lambda proc=proc: "ready." in proc.log() or not proc.alive(), 90, message=f"{wid} ready")
        time.sleep(1.0)  # let every worker's consumer settle (and Sentinel's registry fill)

        app = Celery(f"bench_failover_client_{variant}", broker=url)  # publishes only, by task name
        healthy_sent = time.time()
        app.send_task("bench.fo.job", kwargs={"tag": "healthy", "seconds": args.healthy}, queue="healthy")
        app.send_task("bench.fo.job", kwargs={"tag": "victim", "seconds": 300}, queue="kill")
        first = wait_for(lambda: runs(client, "victim"), 30, message=f"{variant}: victim to start")[0]
        time.sleep(1.0)  # it is running, not just starting
        if variant == "sentinel":
            leader = client.hget("benchfo:lease:sentinel:failover-monitor", "worker")
            result["leader_killed"] = leader is not None and leader.decode() == first["worker"]
        killed_at = time.time()
        procs[first["worker"]].kill9()
        deadline = killed_at + args.wait
        while time.time() < deadline:
            again = [r for r in runs(client, "victim") if r["at"] > killed_at]
            if again:
                result["rerun_s"] = again[0]["at"] - killed_at
                result["rerun"] = True
                break
            time.sleep(0.1)
        time.sleep(max(0.0, healthy_sent + args.window - time.time()))
        result["healthy_runs"] = len(runs(client, "healthy"))
        app.close()
    except Exception as exc:  # report, do not hide the other variants
        result["error"] = str(exc)
    finally:
        for proc in procs.values():
            proc.kill9()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the re-run")
    parser.add_argument("--healthy", type=float, default=20, help="duration of the healthy task (s)")
    parser.add_argument("--window", type=float, default=40, help="seconds to count the healthy task's starts")
    parser.add_argument("--only", choices=sorted(VARIANTS), action="append", help="run only these set-ups")
    parser.add_argument("--broker", default="", help="amqp://… : compare stock Celery and Sentinel on RabbitMQ")
    parser.add_argument("--consumer-timeout", type=float, default=5, help="RabbitMQ consumer_timeout (s), amqp")
    args = parser.parse_args()
    base, server = ensure_redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    if args.broker.startswith(("amqp://", "amqps://", "pyamqp://")):
        try:
            run_amqp(args, base)
        finally:
            if server:
                server.stop()
        return
    results: dict[str, dict] = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as logs:
        try:
            # The set-ups run at the same time (each on its own database), to bound the run time.
            threads = [threading.Thread(target=run_variant, args=(v, base, args, Path(logs), results))
                       for v in (args.only or VARIANTS)]
            for t in threads:
                t.start()
                time.sleep(0.5)
            for t in threads:
                t.join()
        finally:
            if server:
                server.stop()
    print(f"\nkill -9 of the worker running a task; healthy {args.healthy:.0f} s task on a live worker "
          f"(run took {time.time() - started:.0f} s)")
    print(f"{'set-up':<50} {'kill -> re-run':>14} {'re-run <= ' + str(int(args.wait)) + ' s':>14} "
          f"{'healthy task runs':>18}")
    for variant in VARIANTS:
        r = results.get(variant)
        if r is None:
            continue
        if "error" in r:
            print(f"{r['label']:<50} error: {r['error']}")
            continue
        rerun = f"{r['rerun_s']:.1f} s" if r["rerun"] else f"> {args.wait:.0f} s"
        note = "  (the killed worker was the monitor leader)" if r.get("leader_killed") else ""
        print(f"{r['label']:<50} {rerun:>14} {'yes' if r['rerun'] else 'no':>14} "
              f"{r['healthy_runs']:>18}{note}")


def run_amqp(args, base: str) -> None:
    host = urlsplit(args.broker).hostname or "127.0.0.1"
    port = urlsplit(args.broker).port or 5672
    if not port_answers(host, port):
        raise SystemExit(f"bench: no RabbitMQ answers at {host}:{port}")
    results: dict[str, dict] = {}
    started = time.time()
    long_node = PrivateNode(consumer_timeout_ms=int(args.consumer_timeout * 1000), management=True).start()
    try:
        with tempfile.TemporaryDirectory() as logs:
            threads = [threading.Thread(target=run_amqp_variant,
                                        args=(v, args.broker, None, long_node, db_url(base, db), args, Path(logs),
                                              results))
                       for v, db in (("stock", 13), ("sentinel", 14))]
            for t in threads:
                t.start()
                time.sleep(0.5)
            for t in threads:
                t.join()
    finally:
        long_node.stop()
    amqp_report({v: results[v] for v in AMQP_LABELS if v in results}, args)
    print(f"(run took {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
