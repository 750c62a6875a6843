"""Scale beyond one machine, by simulation: N simulated workers beating into one Redis.

The workers are not Celery processes: each is a real registry entry (``RedisRegistry.register``) and
beats with the real Lua script (``RedisRegistry.beat``), pipelined per thread, at the configured
heartbeat interval. While they beat, the monitor's sweep runs as in production — ``Failover.check()``
(pending recoveries + the stale query) when the failover module is installed, else
``RedisRegistry.stale_ids()`` + ``workers()`` — and is timed. Part way through, some workers stop
beating; the sweep that declares them dead is timed too (the ping is answered "nobody" at once: in
production it adds at most ``heartbeat.pingTimeoutMs``, a wait, not load). Also measured: one metrics
snapshot (what a Prometheus scrape reads), Redis memory before and after, and the GitHub request
rate the mirror would need at this size (a model; see ``github_model``).

Bounded: it stops after ``--seconds`` and deletes every key it wrote (its own namespace).

    python bench/scale_sim.py [--workers 1000] [--seconds 20] [--threads 4] [--dead 10]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from sentinel_celery.config import load_config, set_config  # noqa: E402
from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from sentinel_celery.state.registry import RedisRegistry  # noqa: E402


def registration(i: int) -> dict:
    types = ("build", "test", "deploy")
    return {"nodename": f"sim-{i:05d}@host-{i // 8:04d}", "hostname": f"host-{i // 8:04d}", "pid": 10000 + i,
            "queues": [types[i % 3]], "capacity": {"maxConcurrentTasks": 4, "cpuCores": 8, "memoryMb": 16384,
                                                   "supportedTaskTypes": [types[i % 3]]},
            "metadata": {"region": ("eu-west", "us-east", "us-west")[i % 3], "environment": "sim"},
            "concurrency": 4, "started": int(time.time() * 1000)}


class Beaters:
    """Threads that beat for their share of the simulated workers, one pipeline per round."""

    def __init__(self, client, ns, stale_ms, ids, instances, interval, threads):
        self.client, self.ns, self.stale_ms = client, ns, stale_ms
        self.ids, self.instances, self.interval = ids, instances, interval
        self.silenced: set[str] = set()
        self.stop = threading.Event()
        self.rounds = 0
        self.round_ms: list[float] = []
        self._lock = threading.Lock()
        shares = [ids[k::threads] for k in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(share,), daemon=True) for share in shares]

    def start(self):
        for t in self.threads:
            t.start()

    def _run(self, share):
        pipe = self.client.pipeline(transaction=False)
        registry = RedisRegistry(pipe, self.ns, self.stale_ms)  # the real beat script, queued on the pipe
        n = 0
        while not self.stop.is_set():
            started = time.perf_counter()
            for wid in share:
                if wid not in self.silenced:
                    registry.beat(wid, self.instances[wid],
                                  {"active": n % 5, "reserved": n % 3, "processed": n, "concurrency": 4})
            pipe.execute()
            n += 1
            with self._lock:
                self.rounds += 1
                self.round_ms.append((time.perf_counter() - started) * 1000)
            self.stop.wait(max(self.interval - (time.perf_counter() - started), 0.0))

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def make_sweep(cfg, client):
    """The monitor's per-tick work: failover.Failover.check() if installed, else the registry queries."""
    try:
        from sentinel_celery.cluster.failover import Failover
        from sentinel_celery.plugin import create_app
    except ModuleNotFoundError:
        registry = RedisRegistry(client, cfg.namespace, cfg.get("distributed.heartbeat.staleThresholdMs"))
        return "RedisRegistry.stale_ids() + workers()", lambda: (registry.stale_ids(), registry.workers())
    app = create_app("scale_sim", config=cfg)
    failover = Failover(app, cfg, actor="scale-sim", client=client, ping=lambda nodes, timeout: set())
    return "failover.Failover.check()", failover.check


def github_model(workers: int, cfg, churn_per_worker_day: float, linked_jobs_per_hour: float) -> dict:
    """GitHub requests/hour the mirror needs: O(changes per flush interval), never O(heartbeats).

    Heartbeats change nothing on GitHub. What does: a worker's state (online → offline/draining → online:
    one edit of its worker issue per change), failovers (one comment), linked jobs (queued/started/done,
    folded per flush into at most one comment edit + one label/commit-status write per job), and the
    dashboard (one edit per flush interval in which anything changed). The mirror's own budget
    (maxWritesPerMinute) caps the total whatever the cluster does.
    """
    flush_s = cfg.get("github.mirror.flushIntervalMs") / 1000.0
    state_changes = workers * churn_per_worker_day / 24.0 * 2      # down and up again
    failover_comments = workers * churn_per_worker_day / 24.0 * 0.1  # assume 1 in 10 restarts is a crash
    job_writes = linked_jobs_per_hour * 2
    dashboard = min(3600.0 / flush_s, state_changes + failover_comments + job_writes)
    need = state_changes + failover_comments + job_writes + dashboard
    cap = min(cfg.get("github.mirror.maxWritesPerMinute") * 60, cfg.get("github.mirror.maxWritesPerSecond") * 3600)
    return {"worker_state_edits": round(state_changes), "failover_comments": round(failover_comments),
            "linked_job_writes": round(job_writes), "dashboard_edits": round(dashboard),
            "needed_per_hour": round(need), "mirror_cap_per_hour": int(cap),
            "sent_per_hour": round(min(need, cap)), "github_limit_per_hour": 5000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--dead", type=int, default=10, help="workers that stop beating half way")
    parser.add_argument("--interval-ms", type=int, default=2000, help="heartbeat interval")
    parser.add_argument("--stale-ms", type=int, default=6000, help="stale threshold")
    parser.add_argument("--churn-per-day", type=float, default=1.0, help="restarts per worker per day (model)")
    parser.add_argument("--linked-jobs-per-hour", type=float, default=500.0, help="jobs linked to GitHub (model)")
    args = parser.parse_args()
    logging.getLogger("sentinel_celery").setLevel(logging.ERROR)  # the failovers it provokes are expected

    url, server = ensure_redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    ns = f"scale-sim-{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(url, decode_responses=True)
    cfg = load_config(environ={"REDIS_URL": url, "SENTINEL_NAMESPACE": ns, "SENTINEL_BROKER_PREFIX": ns},
                      overrides={"distributed.heartbeat.intervalMs": args.interval_ms,
                                 "distributed.heartbeat.staleThresholdMs": args.stale_ms,
                                 "monitoring.logShipping": False})
    set_config(cfg)
    beaters = None
    try:
        mem_before = client.info("memory")["used_memory"]
        registry = RedisRegistry(client, ns, args.stale_ms)
        ids = [f"sim-{i:05d}" for i in range(args.workers)]
        instances = {wid: uuid.uuid4().hex for wid in ids}
        started = time.perf_counter()
        for i, wid in enumerate(ids):
            registry.register(wid, instances[wid], registration(i))
        register_s = time.perf_counter() - started
        how, sweep = make_sweep(cfg, client)

        beaters = Beaters(client, ns, args.stale_ms, ids, instances, args.interval_ms / 1000.0, args.threads)
        beaters.start()
        sweep_ms, detect_ms, declared = [], [], 0
        deadline = time.monotonic() + args.seconds
        silence_at = time.monotonic() + args.seconds / 3.0
        tick = min(max(args.interval_ms / 2000.0, 0.05), 1.0)  # the monitor's tick (monitor.py)
        while time.monotonic() < deadline:
            if silence_at and time.monotonic() >= silence_at:
                beaters.silenced.update(ids[:: max(args.workers // max(args.dead, 1), 1)][:args.dead])
                silence_at = 0
            t0 = time.perf_counter()
            events = sweep()
            ms = (time.perf_counter() - t0) * 1000
            found = events if isinstance(events, list) and events and isinstance(events[0], dict) else []
            (detect_ms if found else sweep_ms).append(ms)
            declared += len(found)
            time.sleep(tick)
        beaters.join()

        from sentinel_celery.cluster.snapshot import collect_snapshot
        t0 = time.perf_counter()
        snap = collect_snapshot(cfg, client=client)
        snapshot_ms = (time.perf_counter() - t0) * 1000
        mem_after = client.info("memory")["used_memory"]

        print(f"{args.workers} simulated workers, {args.threads} beating threads, heartbeat {args.interval_ms} ms, "
              f"stale {args.stale_ms} ms, {args.seconds:.0f} s, Redis {url}")
        print(f"registration           {register_s * 1000:8.0f} ms for all ({register_s / args.workers * 1e6:.0f} us each)")
        rounds = sorted(beaters.round_ms)
        print(f"beat round (pipelined) {statistics.median(rounds):8.1f} ms median per thread of "
              f"{args.workers // args.threads} workers, p99 {rounds[int(len(rounds) * 0.99) - 1]:.1f} ms")
        s = sorted(sweep_ms)
        print(f"monitor sweep          {statistics.median(s):8.2f} ms median, p99 {s[max(int(len(s) * 0.99) - 1, 0)]:.2f} ms, "
              f"max {s[-1]:.2f} ms over {len(s)} sweeps  [{how}]")
        if detect_ms:
            print(f"sweep declaring dead   {max(detect_ms):8.1f} ms max ({declared} of {args.dead} silenced workers "
                  f"declared dead and recovered, in {len(detect_ms)} sweep(s))")
        print(f"metrics snapshot       {snapshot_ms:8.1f} ms ({len(snap['workers'])} workers read)")
        print(f"redis memory           {(mem_after - mem_before) / 1024:8.0f} KiB more "
              f"({(mem_after - mem_before) / args.workers:.0f} bytes per worker)")
        gh = github_model(args.workers, cfg, args.churn_per_day, args.linked_jobs_per_hour)
        print(f"github requests/hour   {gh['sent_per_hour']:8d} (needed {gh['needed_per_hour']}: worker state "
              f"{gh['worker_state_edits']}, failover {gh['failover_comments']}, linked jobs {gh['linked_job_writes']}, "
              f"dashboard {gh['dashboard_edits']}; mirror cap {gh['mirror_cap_per_hour']}, GitHub limit 5000)")
    finally:
        if beaters:
            beaters.join()
        keys = list(client.scan_iter(match=f"{ns}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        if server:
            server.stop()


if __name__ == "__main__":
    main()
