"""Fenced leases against a real Redis: exclusion across processes, strictly increasing tokens,
renewal, owner-checked release, the paused-holder (SIGSTOP) case, and the task contention policies."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import get_config
from sentinel_celery.state.connection import get_redis
from sentinel_celery.state.leases import LockContended, get_backend, lease, try_acquire


def _contender(n_rounds, results_key):
    # Runs in a forked process: take the lease, check nobody else is inside, record the token.
    cfg = get_config()
    client = get_redis()
    inside = f"{cfg.namespace}test:inside"
    for _ in range(n_rounds):
        with lease("shared-resource", ttl=5, wait=30, worker=f"p{os.getpid()}") as held:
            if client.incr(inside) != 1:
                client.rpush(results_key, "OVERLAP")
            client.rpush(results_key, held.token)
            time.sleep(0.005)
            client.decr(inside)


def test_mutual_exclusion_and_strictly_increasing_tokens_across_processes(sentinel_env, rclient, namespace):
    results = f"{namespace}test:tokens"
    ctx = multiprocessing.get_context("spawn")  # fork could copy a lock held by a thread of this process
    procs = [ctx.Process(target=_contender, args=(10, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    recorded = rclient.lrange(results, 0, -1)
    assert "OVERLAP" not in recorded
    tokens = [int(t) for t in recorded]
    assert len(tokens) == 40
    assert tokens == sorted(tokens) and len(set(tokens)) == 40  # in acquisition order, strictly increasing
    stats = {s["name"]: s for s in get_backend().stats()}["shared-resource"]
    assert stats["acquisitions"] == 40 and stats["releases"] == 40


def test_tokens_increase_even_after_expiry(sentinel_env):
    first = try_acquire("expiring", 0.2, renew=False)
    time.sleep(0.4)
    second = try_acquire("expiring", 5)
    assert second.token > first.token
    assert first.release() is False  # expired and taken: not ours to release
    assert second.release() is True


def test_renewal_keeps_the_lease_past_its_ttl(sentinel_env, rclient, namespace):
    with lease("long-job", ttl=0.6) as held:
        time.sleep(2.0)
        assert not held.lost
        assert rclient.hget(f"{namespace}lease:long-job", "token") == str(held.token)
        with pytest.raises(LockContended):
            try_acquire("long-job", 5)
    assert rclient.exists(f"{namespace}lease:long-job") == 0


def test_release_is_owner_checked(sentinel_env, rclient, namespace):
    held = try_acquire("owned", 5)
    backend = get_backend()
    assert backend.release("owned", "someone-else", held.token) is False
    assert backend.release("owned", held.owner, held.token + 1) is False
    assert rclient.hget(f"{namespace}lease:owned", "owner") == held.owner
    assert held.release() is True


def test_context_manager_waits_then_raises_lock_contended(sentinel_env):
    holder = try_acquire("busy", 10)
    with pytest.raises(LockContended) as err:
        with lease("busy", wait=[0.05, 0.05, 0.05]):
            pass
    assert err.value.holder == holder.owner and err.value.token == holder.token
    stats = {s["name"]: s for s in get_backend().stats()}["busy"]
    assert stats["waits"] == 3 and stats["conflicts"] == 4
    holder.release()


PAUSED_HOLDER = """
import json, sys, time
from sentinel_celery.state.leases import try_acquire
held = try_acquire("paused", 1.0, worker="A")
print(json.dumps({"token": held.token}), flush=True)
sys.stdin.readline()
time.sleep(0.6)
print(json.dumps({"lost": held.lost, "released": held.release()}), flush=True)
"""


def test_paused_holder_cannot_renew_or_release_the_next_holders_lease(sentinel_env, rclient, namespace):
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=os.getcwd())
    try:
        token_a = json.loads(proc.stdout.readline())["token"]
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: not rclient.exists(f"{namespace}lease:paused"), 10, message="the paused lease to expire")
        b = try_acquire("paused", 30, worker="B")
        assert b.token > token_a
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        outcome = json.loads(proc.stdout.readline())
        assert outcome == {"lost": True, "released": False}
        assert rclient.hget(f"{namespace}lease:paused", "owner") == b.owner
        assert rclient.hget(f"{namespace}lease:paused", "token") == str(b.token)
        assert b.release() is True
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


def test_fencing_a_worker_releases_its_leases_and_rejects_its_late_renewal(sentinel_env, rclient, namespace):
    held = try_acquire("env:prod", 30, worker="dead-worker", renew=False)
    other = try_acquire("env:qa", 30, worker="live-worker", renew=False)
    assert get_backend().fence_worker("dead-worker") == ["env:prod"]
    assert rclient.exists(f"{namespace}lease:env:prod") == 0
    assert held.renew() is False and held.lost
    assert other.renew() is True
    assert try_acquire("env:prod", 5, renew=False).token > other.token > held.token


def test_distinct_lock_keys_leave_no_state_behind_but_expiring_stats(sentinel_env, rclient, namespace):
    tokens = []
    for i in range(30):  # like build:{sha}: a new name every time
        lease = try_acquire(f"build:{i}", 30, renew=False)
        tokens.append(lease.token)
        assert lease.release()
    assert tokens == sorted(set(tokens))  # strictly increasing across names too
    assert not list(rclient.scan_iter(match=f"{namespace}lease:fence:*"))
    assert not [k for k in rclient.scan_iter(match=f"{namespace}lease:build:*")]  # the leases themselves
    stats = list(rclient.scan_iter(match=f"{namespace}lease:stats:build:*"))
    assert len(stats) == 30 and all(0 < rclient.ttl(k) <= 7 * 24 * 3600 for k in stats)
    backend = get_backend()
    assert {r["name"] for r in backend.stats()} >= {f"build:{i}" for i in range(30)}
    rclient.zadd(f"{namespace}leases:recent", {"build:0": 1})  # acquired long ago
    rows = {r["name"]: r for r in backend.stats()}
    assert "build:0" not in rows and rows["build:29"]["last_token"] == tokens[-1]


def test_a_lease_listed_by_an_earlier_version_is_still_fenced_with_its_worker(sentinel_env, rclient, namespace):
    held = try_acquire("env:old", 30, worker="old-worker", renew=False)
    rclient.zadd(f"{namespace}leases:recent", {"env:old": 1})  # not in the new index ...
    rclient.sadd(f"{namespace}worker:old-worker:leases", "env:old")  # ... but in the old per-worker set
    assert get_backend().fence_worker("old-worker") == ["env:old"]
    assert held.renew() is False and not rclient.exists(f"{namespace}worker:old-worker:leases")


# -- the lock mixin on real workers ------------------------------------------------------------------

def test_task_gets_a_token_and_keeps_its_lease_while_running(workers, celery_client, rclient, namespace):
    workers.start("wl", queues=["test"], concurrency=1)
    first = celery_client.send_task("tests.leased", args=["db"], kwargs={"sleep": 2.5}).get(timeout=30)
    second = celery_client.send_task("tests.leased", args=["db"]).get(timeout=30)
    assert first["lost"] is False  # lock_ttl is 1 s: only renewal kept it for 2.5 s
    assert second["token"] > first["token"]
    assert rclient.exists(f"{namespace}lease:res:db") == 0


def test_contention_policies(workers, celery_client):
    workers.start("wc", queues=["test"], concurrency=2)
    holder = try_acquire("res:shared", 60)
    fail = celery_client.send_task("tests.contend_fail", args=["shared"])
    skip = celery_client.send_task("tests.contend_skip", args=["shared"])
    exhausted = celery_client.send_task("tests.contend_retry", args=["shared"])
    with pytest.raises(Exception) as err:
        fail.get(timeout=30)
    assert type(err.value).__name__ == "LockContended"
    assert skip.get(timeout=30)["skipped"] is True
    with pytest.raises(Exception) as err:  # 3 retries at 200, 400, 800 ms, then LockContended
        exhausted.get(timeout=30)
    assert type(err.value).__name__ == "LockContended"
    retry = celery_client.send_task("tests.contend_retry", args=["shared"])
    wait_for(lambda: retry.state == "RETRY", 20, message="the task to be retrying")
    holder.release()
    out = retry.get(timeout=30)
    assert out["ran"] is True and out["retries"] >= 1 and out["token"] > holder.token
