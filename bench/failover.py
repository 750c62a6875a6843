"""Failover: how fast a killed worker's task runs again, and whether a healthy long task runs twice.

Three set-ups side by side, in one run, each on its own Redis database (flushed first):

  stock      Celery 5.7 + Redis, acks_late + reject_on_worker_lost, default settings
  tuned      the same with visibility_timeout=10 s and kombu's unacked sweep every second
             (transport options unacked_restore_interval=1, unacked_restore_throttle=1)
  sentinel-hb  the Sentinel app with the shipped config/shared.json (heartbeat 2 s, stale 6 s) and
             failover.connectionWatch switched off: heartbeat and ping only
  sentinel   the shipped config as it is (the connection watch on): a dead process's closed Redis connection
             is seen

Each set-up runs two independent pairs of workers (concurrency 1, prefetch 1):
  * kill pair: a 300 s task starts on one worker, which is then killed with SIGKILL (main
    process and pool); we measure the seconds until the task starts again on the other worker,
    waiting at most --wait seconds; then a fresh worker replaces the killed one and it starts over,
    --kills times (median reported; a set-up stops at its first kill not re-run within --wait);
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
import random
import shutil
import statistics
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
    "sentinel-hb": ("Sentinel, heartbeat only (connectionWatch off)", 9),
    "sentinel": ("Sentinel, shipped config (connection watch)", 12),
}


def db_url(base: str, db: int) -> str:
    return base.rsplit("/", 1)[0] + f"/{db}"


def runs(client: redis.Redis, tag: str) -> list[dict]:
    return [json.loads(r) for r in client.lrange(f"benchfo:runs:{tag}", 0, -1)]


def config_dir(variant: str, tmp: Path) -> str:
    """The shipped config; for ``sentinel-hb`` with the connection watch switched off (it is on by default)."""
    if variant != "sentinel-hb":
        return str(ROOT / "config")
    target = tmp / "config-heartbeat-only"
    if not target.exists():
        shutil.copytree(ROOT / "config", target)
        shared = json.loads((target / "shared.json").read_text())
        shared["distributed"].setdefault("failover", {})["connectionWatch"] = False
        (target / "shared.json").write_text(json.dumps(shared))
    return str(target)


def run_variant(variant: str, base_url: str, args, log_dir: Path, out: dict) -> None:
    label, db = VARIANTS[variant]
    url = db_url(base_url, db)
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {"BENCH_FO_VARIANT": variant, "BENCH_FO_URL": url, "REDIS_URL": url,
           "SENTINEL_CONFIG_DIR": config_dir(variant, log_dir), "SENTINEL_NAMESPACE": "benchfo:",
           "PYTHONPATH": str(ROOT)}
    names = {"kill": [f"{variant}-k1", f"{variant}-k2"], "healthy": [f"{variant}-h1", f"{variant}-h2"]}
    procs = {}
    result = out[variant] = {"label": label, "reruns": [], "rerun": False, "healthy_runs": None, "leader_killed": 0}

    def start(wid: str, queue: str) -> None:
        procs[wid] = start_worker(wid, env=env, log_dir=log_dir, app="bench.failover_apps", queues=[queue],
                                  concurrency=1, loglevel="INFO")

    def ready(wid: str) -> None:
        wait_for(lambda: "ready." in procs[wid].log() or not procs[wid].alive(), 90, message=f"{wid} ready")

    try:
        for queue, ids in names.items():
            for wid in ids:
                start(wid, queue)
        for wid in list(procs):
            ready(wid)
        time.sleep(1.0)  # let every worker's consumer settle (and Sentinel's registry fill)

        app = Celery(f"bench_failover_client_{variant}", broker=url)  # publishes only, by task name
        healthy_sent = time.time()
        app.send_task("bench.fo.job", kwargs={"tag": "healthy", "seconds": args.healthy}, queue="healthy")
        for k in range(args.kills):
            tag = f"victim{k}"
            app.send_task("bench.fo.job", kwargs={"tag": tag, "seconds": 300, "then": 0.2}, queue="kill")
            first = wait_for(lambda tag=tag: runs(client, tag), 60, message=f"{variant}: {tag} to start")[0]
            # it is running, not just starting; a random extra so kills do not fall in step with the monitor's ticks
            time.sleep(1.0 + random.random() * 0.5)
            if variant.startswith("sentinel"):
                leader = client.hget("benchfo:lease:sentinel:failover-monitor", "worker")
                result["leader_killed"] += int(leader is not None and leader.decode() == first["worker"])
            killed_at = time.time()
            procs[first["worker"]].kill9()
            deadline = killed_at + args.wait
            while time.time() < deadline:
                again = [r for r in runs(client, tag) if r["at"] > killed_at]
                if again:
                    result["reruns"].append(again[0]["at"] - killed_at)
                    break
                time.sleep(0.05)
            else:
                break  # not re-run within --wait: more kills would only measure the same
            if k + 1 < args.kills:
                fresh = f"{variant}-k{k + 3}"
                start(fresh, "kill")
                ready(fresh)
                time.sleep(1.0)
        result["rerun"] = len(result["reruns"]) == args.kills
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
    parser.add_argument("--kills", type=int, default=5, help="kills per set-up (median reported)")
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
    print(f"\nkill -9 of the worker running a task, {args.kills} times per set-up; healthy {args.healthy:.0f} s "
          f"task on a live worker (run took {time.time() - started:.0f} s)")
    print(f"{'set-up':<50} {'kill -> re-run (median)':>24} {'all re-run <= ' + str(int(args.wait)) + ' s':>18} "
          f"{'healthy task runs':>18}  each kill")
    for variant in VARIANTS:
        r = results.get(variant)
        if r is None:
            continue
        if "error" in r:
            print(f"{r['label']:<50} error: {r['error']}")
            continue
        reruns = r["reruns"]
        median = f"{statistics.median(reruns):.2f} s" if r["rerun"] else f"> {args.wait:.0f} s"
        each = ", ".join([f"{x:.2f}" for x in reruns] + ([] if r["rerun"] else [f"> {args.wait:.0f}"]))
        note = f"  ({r['leader_killed']} of the kills hit the monitor leader)" if r.get("leader_killed") else ""
        print(f"{r['label']:<50} {median:>24} {'yes' if r['rerun'] else 'no':>18} "
              f"{r['healthy_runs']:>18}  {each}{note}")


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
