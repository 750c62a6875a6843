"""Leases: Sentinel's fenced lease against the Redis locks people use instead, in one process, one run.

Uncontended acquire + release pairs per second, on the same Redis, rounds interleaved between
variants, median reported, ratios against redis-py's ``Lock`` measured in the same run:

  redis-py Lock          SET NX PX + a Lua compare-and-delete (no fencing token, no stats)
  python-redis-lock      SET NX EX + a Lua release that also signals waiters
  celery-once (Redis)    SET NX EX + DEL (no owner check on release)
  pottery Redlock        Redlock over one master (the algorithm, on a single Redis)
  sentinel lease         fenced token, owner-checked renew and release, stats, listing, failover fencing,
                         renewed in the background (the keeper thread)

Then the waiting side: a contended ``lease(..., wait=W)`` while another owner holds the lease for
``hold`` seconds: how soon after the release it gets the lease, how many acquire attempts it made and
the CPU it used (process time).

    pip install -e '.[bench]' && python bench/leases.py [--pairs 2000] [--rounds 3]

Peers that are not installed are skipped (they are the ``bench`` extra).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from sentinel_celery.ops.embedded import ensure_redis  # noqa: E402
from sentinel_celery.state.leases import RedisLeaseBackend, lease, try_acquire  # noqa: E402

TTL = 30


def redis_py(client: redis.Redis, prefix: str) -> Callable[[int], None]:
    def pair(i: int) -> None:
        lock = client.lock(f"{prefix}redis-py:{i}", timeout=TTL)
        assert lock.acquire(blocking=False)
        lock.release()
    return pair


def python_redis_lock(client: redis.Redis, prefix: str) -> Callable[[int], None] | None:
    try:
        import redis_lock
    except ImportError:
        return None

    def pair(i: int) -> None:
        lock = redis_lock.Lock(client, f"{prefix}prl:{i}", expire=TTL)
        assert lock.acquire(blocking=False)
        lock.release()
    return pair


def celery_once(url: str, prefix: str) -> Callable[[int], None] | None:
    try:
        from celery_once.backends import Redis as OnceRedis
    except ImportError:
        return None
    backend = OnceRedis({"url": url, "default_timeout": TTL})

    def pair(i: int) -> None:
        key = f"{prefix}once:{i}"
        backend.raise_or_lock(key, timeout=TTL)
        backend.clear_lock(key)
    return pair


def pottery_redlock(client: redis.Redis, prefix: str) -> Callable[[int], None] | None:
    try:
        from pottery import Redlock
    except ImportError:
        return None

    def pair(i: int) -> None:
        lock = Redlock(key=f"{prefix}redlock:{i}", masters={client}, auto_release_time=TTL)
        assert lock.acquire(blocking=False)
        lock.release()
    return pair


def sentinel_lease(client: redis.Redis, prefix: str) -> Callable[[int], None]:
    backend = RedisLeaseBackend(client, f"{prefix}sentinel:")

    def pair(i: int) -> None:
        held = try_acquire(f"job:{i}", TTL, backend=backend)
        assert held.release()
    return pair


def pairs_per_second(pair: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        pair(i)
    return n / (time.perf_counter() - start)


def contended_wait(client: redis.Redis, prefix: str, hold: float, wait: float) -> dict:
    """One owner holds the lease for ``hold`` s; another waits up to ``wait`` s for it."""
    backend = RedisLeaseBackend(client, f"{prefix}sentinel-wait:")
    holder = try_acquire("contended", TTL, backend=backend)
    threading.Timer(hold, holder.release).start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    with lease("contended", ttl=TTL, wait=wait, backend=backend, worker="") as got:
        waited = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        token = got.token
    stats = next(s for s in backend.stats() if s["name"] == "contended")
    return {"waited_s": round(waited, 3), "late_by_s": round(waited - hold, 3), "cpu_s": round(cpu, 4),
            "attempts": stats["conflicts"] + 1, "token": token}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()

    url, server = ensure_redis(args.redis_url)
    client = redis.Redis.from_url(url, decode_responses=True)
    prefix = f"bench-leases-{uuid.uuid4().hex[:6]}:"
    variants = {
        "redis-py Lock": redis_py(client, prefix),
        "python-redis-lock": python_redis_lock(client, prefix),
        "celery-once (Redis backend)": celery_once(url, prefix),
        "pottery Redlock (1 master)": pottery_redlock(client, prefix),
        "sentinel fenced lease": sentinel_lease(client, prefix),
    }
    skipped = [name for name, pair in variants.items() if pair is None]
    variants = {name: pair for name, pair in variants.items() if pair is not None}
    try:
        for pair in variants.values():  # warm up: scripts loaded, connections open
            pairs_per_second(pair, 50)
        results: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(args.rounds):
            for name, pair in variants.items():
                results[name].append(pairs_per_second(pair, args.pairs))
            print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in results.items()), flush=True)
        base = statistics.median(results["redis-py Lock"])
        print(f"\nuncontended acquire + release pairs/s, median of {args.rounds} interleaved rounds of "
              f"{args.pairs} (same Redis, one process):")
        print(f"{'variant':<30} {'pairs/s':>10} {'vs redis-py Lock':>18}")
        for name, values in results.items():
            med = statistics.median(values)
            print(f"{name:<30} {med:>10,.0f} {med / base:>17.2f}x")
        for name in skipped:
            print(f"{name:<30} {'skipped (not installed; pip install -e .[bench])':>10}")
        waited = contended_wait(client, prefix, hold=2.0, wait=10.0)
        print(f"\ncontended lease(wait=10) while another owner holds it for 2 s: acquired after "
              f"{waited['waited_s']} s ({waited['late_by_s']} s after the release), "
              f"{waited['attempts']} acquire attempts (one before, one after the wake-up: BLPOP on the lease's "
              f"wake-up list, no polling), {waited['cpu_s']} s of CPU in this process while waiting")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
