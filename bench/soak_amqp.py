"""Soak on RabbitMQ: Sentinel workers on ``amqp://`` under mixed work, one kill -9 and one SIGSTOP; no traceback.

    python bench/soak_amqp.py [--broker amqp://guest:guest@127.0.0.1:5672//] [--duration 600]

Three workers (concurrency 2) in a vhost of their own (created and deleted with rabbitmqctl) and a
namespace of their own in Redis (deleted at the end). Every second one or two jobs are sent (mostly 0.1-2 s,
now and then 15-20 s: about half the workers' capacity); at 1/5 of the run the worker running a job is killed with SIGKILL (and a replacement
started), at 1/2 another is stopped with SIGSTOP for 20 s, then continued. At the end: every job ran (a job
killed or frozen mid-run runs again), and no worker log holds a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from sentinel_celery.cluster.processes import start_worker, wait_for  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from tests.rabbitmq_support import rabbitmqctl  # noqa: E402

MARKERS = ("Traceback", "PRECONDITION_FAILED", "Unrecoverable error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--duration", type=float, default=600, help="seconds of work")
    args = parser.parse_args()
    base, server = ensure_redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    redis_url = base.rsplit("/", 1)[0] + "/15"
    client = redis.Redis.from_url(redis_url)
    namespace = f"soak-{os.getpid()}:"
    vhost = f"sentinel-soak-{os.getpid()}"
    for cmd in (("add_vhost", vhost), ("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        rabbitmqctl(*cmd)
    parts = urlsplit(args.broker)
    broker = urlunsplit((parts.scheme, parts.netloc, "/" + vhost, "", ""))
    env = {"BENCH_FO_VARIANT": "sentinel", "BENCH_FO_URL": redis_url, "REDIS_URL": redis_url,
           "SENTINEL_BROKER_URL": broker, "SENTINEL_CONFIG_DIR": str(ROOT / "config"),
           "SENTINEL_NAMESPACE": namespace, "PYTHONPATH": str(ROOT)}
    client.delete("benchfo:runs:soak")
    procs, retired = {}, []
    logs = Path(tempfile.mkdtemp(prefix="sentinel-soak-"))
    sent: list[str] = []
    started = time.time()
    try:
        def start(wid):
            procs[wid] = start_worker(wid, env=env, log_dir=logs, app="bench.failover_apps",
                                      queues=["soak"], concurrency=2, loglevel="INFO")
            wait_for(lambda: "ready." in procs[wid].log() or not procs[wid].alive(), 90, message=f"{wid} ready")

        for wid in ("soak-1", "soak-2", "soak-3"):
            start(wid)
        app = Celery("soak_client", broker=broker)
        killed = stopped = False
        n = 0
        while time.time() - started < args.duration:
            for _ in range(random.randint(1, 2)):
                seconds = random.choice([0.1, 0.2, 0.5, 1, 1, 2]) if n % 23 else random.choice([15, 20])
                tag = f"job-{n}"
                app.send_task("bench.fo.job", kwargs={"tag": "soak", "seconds": seconds}, queue="soak",
                              task_id=tag)
                sent.append(tag)
                n += 1
            elapsed = time.time() - started
            if not killed and elapsed > args.duration / 5:
                victim = next(iter(procs))
                procs[victim].kill9()
                retired.append(procs.pop(victim))
                start("soak-4")
                killed = True
                print(f"{elapsed:.0f}s: kill -9 {victim}; started soak-4", flush=True)
            if not stopped and elapsed > args.duration / 2:
                victim = sorted(procs)[0]
                os.killpg(procs[victim].pid, signal.SIGSTOP)
                print(f"{elapsed:.0f}s: SIGSTOP {victim} for 20 s", flush=True)
                time.sleep(20)
                os.killpg(procs[victim].pid, signal.SIGCONT)
                stopped = True
            time.sleep(1.0)
        print(f"sent {len(sent)} jobs; waiting for them to finish", flush=True)
        # the records hold the tag 'soak'; count runs by task id through the result of the worker: one rpush each
        wait_for(lambda: client.llen("benchfo:runs:soak") >= len(sent), max(180.0, args.duration / 2),
                 interval=1.0, message="every job to run")
        time.sleep(5)
        runs = [json.loads(r) for r in client.lrange("benchfo:runs:soak", 0, -1)]
        bad = {}
        for p in [*procs.values(), *retired]:
            log = p.log()
            hits = [m for m in MARKERS if m in log]
            if hits:
                bad[p.worker_id] = hits
        print(f"jobs sent {len(sent)}, runs recorded {len(runs)} (a job killed or frozen mid-run runs again), "
              f"workers with a traceback: {bad or 'none'}; logs in {logs}")
        app.close()
    finally:
        for p in [*procs.values(), *retired]:
            p.kill9()
        rabbitmqctl("delete_vhost", vhost)
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        client.delete("benchfo:runs:soak")
        if server:
            server.stop()


if __name__ == "__main__":
    main()
