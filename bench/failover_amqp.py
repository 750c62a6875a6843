"""Failover on RabbitMQ: stock Celery vs Sentinel, both on ``amqp://`` (``bench/failover.py --broker amqp://…``).

Each set-up (stock: acks_late + reject_on_worker_lost, defaults; sentinel: the shipped config, heartbeat 2 s,
stale 6 s) gets its own vhost and runs three pairs of workers (concurrency 1, prefetch 1):

  * kill pair: a 300 s job starts on one worker, which is killed with SIGKILL (main process and pool);
    seconds until the job starts again on the other worker (at most --wait);
  * stop pair: the same with SIGSTOP (a hung or partitioned worker keeps its TCP connection);
  * long pair, on a private RabbitMQ node with ``consumer_timeout`` = --consumer-timeout s: a healthy
    job of --healthy s (longer than the timeout); how many times it starts within --window s, and
    whether the worker that first ran it is still up. (Its own Sentinel namespace: one cluster, one broker.)

The kill and stop pairs use the broker given (a vhost of their own, created with rabbitmqctl); the
long pair always a private node (its own name, ports, data and config), stopped at the end.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery

from sentinel_celery.cluster.processes import start_worker, wait_for
from tests.rabbitmq_support import PrivateNode, rabbitmqctl

ROOT = Path(__file__).resolve().parent.parent
LABELS = {"stock": "stock Celery on RabbitMQ (defaults)", "sentinel": "Sentinel on RabbitMQ"}


def with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + vhost, "", ""))


def make_vhost(node: str | None, name: str) -> None:
    for args in (("add_vhost", name), ("set_permissions", "-p", name, "guest", ".*", ".*", ".*")):
        done = rabbitmqctl(*args, node=node)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")


def _forget(client: redis.Redis) -> None:
    """Only this benchmark's keys in its database (the Redis may be shared): runs, namespaces, results."""
    for pattern in ("benchfo:*", "benchfo-long:*", "celery-task-meta-*"):
        for key in client.scan_iter(pattern):
            client.delete(key)


def runs(client: redis.Redis, tag: str) -> list[dict]:
    return [json.loads(r) for r in client.lrange(f"benchfo:runs:{tag}", 0, -1)]


def _env(variant: str, broker: str, redis_url: str, management: str | None, namespace: str) -> dict:
    # one Sentinel cluster (namespace) per broker: a monitor republishes through its own broker
    env = {"BENCH_FO_VARIANT": variant, "BENCH_FO_URL": redis_url, "BENCH_FO_BROKER": broker,
           "REDIS_URL": redis_url, "SENTINEL_BROKER_URL": broker, "SENTINEL_CONFIG_DIR": str(ROOT / "config"),
           "SENTINEL_NAMESPACE": namespace, "PYTHONPATH": str(ROOT)}
    if management and variant == "sentinel":
        env["RABBITMQ_MANAGEMENT_URL"] = management
    return env


def _start_pair(names, queue, env, log_dir, procs):
    for wid in names:
        procs[wid] = start_worker(wid, env=env, log_dir=log_dir, app="bench.failover_apps", queues=[queue],
                                  concurrency=1, loglevel="INFO")
    for wid in names:
        proc = procs[wid]
        wait_for(lambda proc=proc: "ready." in proc.log() or not proc.alive(), 90, message=f"{wid} ready")


def _rerun_after(client, tag, since, wait):
    deadline = since + wait
    while time.time() < deadline:
        again = [r for r in runs(client, tag) if r["at"] > since]
        if again:
            return again[0]["at"] - since
        time.sleep(0.1)
    return None


def run_amqp_variant(variant: str, broker: str, node: str | None, long_node: PrivateNode, redis_url: str,
                     args, log_dir: Path, out: dict) -> None:
    result = out[variant] = {"label": LABELS[variant], "kill_s": None, "stop_s": None, "long_runs": None,
                             "long_worker_up": None, "long_log": ""}
    client = redis.Redis.from_url(redis_url)
    _forget(client)
    procs = {}
    try:
        vhost = f"bench-fo-{variant}-{os.getpid()}"
        make_vhost(node, vhost)
        main_url = with_vhost(broker, vhost)
        make_vhost(long_node.name, vhost)
        long_url = with_vhost(long_node.url, vhost)
        env = _env(variant, main_url, redis_url, None, "benchfo:")
        long_env = _env(variant, long_url, redis_url, long_node.management_url, "benchfo-long:")
        _start_pair([f"{variant}-k1", f"{variant}-k2"], "kill", env, log_dir, procs)
        _start_pair([f"{variant}-s1", f"{variant}-s2"], "stop", env, log_dir, procs)
        _start_pair([f"{variant}-l1", f"{variant}-l2"], "long", long_env, log_dir, procs)
        time.sleep(1.0)

        app = Celery(f"bench_failover_amqp_{variant}", broker=main_url)
        long_app = Celery(f"bench_failover_amqp_long_{variant}", broker=long_url)
        long_sent = time.time()
        long_app.send_task("bench.fo.job", kwargs={"tag": "long", "seconds": args.healthy}, queue="long")
        app.send_task("bench.fo.job", kwargs={"tag": "victim", "seconds": 300}, queue="kill")
        app.send_task("bench.fo.job", kwargs={"tag": "stopped", "seconds": 300}, queue="stop")
        killed = wait_for(lambda: runs(client, "victim"), 30, message=f"{variant}: victim to start")[0]
        stopped = wait_for(lambda: runs(client, "stopped"), 30, message=f"{variant}: stopped job to start")[0]
        time.sleep(6.0)  # running, and its connections listed by the management API
        killed_at = time.time()
        procs[killed["worker"]].kill9()
        result["kill_s"] = _rerun_after(client, "victim", killed_at, args.wait)
        stop_pid = procs[stopped["worker"]].pid
        stopped_at = time.time()
        os.killpg(stop_pid, signal.SIGSTOP)
        try:
            result["stop_s"] = _rerun_after(client, "stopped", stopped_at, args.wait)
        finally:
            os.killpg(stop_pid, signal.SIGCONT)
        time.sleep(max(0.0, long_sent + args.window - time.time()))
        long_runs = runs(client, "long")
        result["long_runs"] = len(long_runs)
        long_worker = procs[long_runs[0]["worker"]] if long_runs else procs[f"{variant}-l1"]
        result["long_worker_up"] = long_worker.alive() and "Unrecoverable error" not in long_worker.log()
        result["long_log"] = "PRECONDITION_FAILED" if "PRECONDITION_FAILED" in long_worker.log() else ""
        app.close()
        long_app.close()
    except Exception as exc:  # report, do not hide the other variant
        result["error"] = str(exc)
    finally:
        for proc in procs.values():
            proc.kill9()
        rabbitmqctl("delete_vhost", f"bench-fo-{variant}-{os.getpid()}", node=node)
        _forget(client)


def report(results: dict, args) -> None:
    print(f"\nRabbitMQ: kill -9 and SIGSTOP of the worker running a job; a healthy {args.healthy:.0f} s job "
          f"with consumer_timeout = {args.consumer_timeout:.0f} s")
    print(f"{'set-up':<40} {'kill -9 -> re-run':>18} {'SIGSTOP -> re-run':>18} {'long job runs':>14} "
          f"{'its worker':>12}")
    for variant in LABELS:
        r = results.get(variant)
        if r is None:
            continue
        if "error" in r:
            print(f"{r['label']:<40} error: {r['error']}")
            continue

        def secs(v):
            return f"{v:.1f} s" if v is not None else f"> {args.wait:.0f} s"
        worker = "up" if r["long_worker_up"] else "died"
        print(f"{r['label']:<40} {secs(r['kill_s']):>18} {secs(r['stop_s']):>18} {r['long_runs']:>14} "
              f"{worker:>12}  {r['long_log']}")
