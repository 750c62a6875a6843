"""Fast failover through the worker's Redis connection, with real worker processes: a kill -9 is
recovered through the closed connection (before the heartbeat could go stale), a paused worker
still goes through the heartbeat and the ping, a Redis restart fails nobody over, and what confirms
a closed connection is a dead process."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import redis

from sentinel_celery.cluster.connection_watch import ConnectionWatch
from sentinel_celery.cluster.failover import Failover
from sentinel_celery.cluster.monitor import LEASE_NAME
from sentinel_celery.cluster.processes import wait_for
from sentinel_celery.config import get_config
from sentinel_celery.ops.embedded import free_port, redis_binary
from sentinel_celery.state.failovers import read_events
from sentinel_celery.state.live_connections import LiveConnection, LivenessIndex, pid_scope
from sentinel_celery.state.registry import RedisRegistry
from tests import failover_jobs  # noqa: F401  (the client routes these by their task type)

INCLUDE = ("tests.jobs", "tests.failover_jobs")
STALE_MS = 6000


@pytest.fixture
def shared_config():
    return {
        "distributed": {
            "locking": {"ttlSeconds": 30, "retryAttempts": 3, "retryDelayMs": 200},
            "heartbeat": {"intervalMs": 1000, "staleThresholdMs": STALE_MS, "recoveryEnabled": True,
                          "pingTimeoutMs": 1000},
            "failover": {"connectionWatch": True},
        }
    }


def start(workers, *ids, env=None, client=None, namespace=None):
    procs = [workers.start(wid, queues=["build"], concurrency=1, include=INCLUDE, wait=False, env=env) for wid in ids]
    for p in procs:
        if client is None:
            workers.wait_ready(p)
        else:  # registered on another Redis than the fixture's
            wait_for(lambda p=p: client.zscore(f"{namespace}workers", p.worker_id) is not None and "ready." in p.log(),
                     45, message=f"{p.worker_id} to be ready")
    return procs


def runs(client, namespace, tag):
    return [r for r in (json.loads(x) for x in client.lrange(f"{namespace}test:runs", 0, -1)) if r["tag"] == tag]


def test_kill9_is_failed_over_through_the_closed_connection(workers, celery_client, rclient, namespace):
    wa, wb = start(workers, "lv-a", "lv-b")
    index = LivenessIndex(rclient, namespace)
    wait_for(lambda: {r.worker_id for r in index.all()} == {"lv-a", "lv-b"}, 10,
             message="both workers to record their liveness connection")
    job = celery_client.send_task("tests.fo.slow", kwargs={"tag": "victim"})
    first = wait_for(lambda: runs(rclient, namespace, "victim"), 30, message="the task to start")[0]
    victim, survivor = (wa, "lv-b") if first["worker"] == "lv-a" else (wb, "lv-a")
    time.sleep(0.5)
    killed_at = time.time()
    victim.kill9()
    again = wait_for(lambda: [r for r in runs(rclient, namespace, "victim") if r["at"] > killed_at], 30,
                     message="the task to start again")[0]
    assert again["worker"] == survivor and job.get(timeout=30)["worker"] == survivor
    (event,) = read_events(rclient, namespace, 10)
    assert event["worker"] == victim.worker_id and event["by"] == survivor
    assert "its process is gone: Redis connection closed" in event["reason"], event["reason"]
    assert event["silent_ms"] < STALE_MS  # declared before its heartbeat could have gone stale
    assert [t["id"] for t in event["tasks_recovered"]] == [job.id]
    assert {r.worker_id for r in index.all()} == {survivor}  # the dead one's record is gone
    wait_for(lambda: rclient.hget(f"{namespace}lease:{LEASE_NAME}", "worker") == survivor, 10,
             message="the survivor to run the monitor")


def test_paused_worker_is_still_recovered_by_heartbeat_and_ping(workers, celery_client, rclient, namespace):
    wa, wb = start(workers, "lv-p", "lv-q")
    job = celery_client.send_task("tests.fo.slow", kwargs={"tag": "paused"})
    first = wait_for(lambda: runs(rclient, namespace, "paused"), 30, message="the task to start")[0]
    paused, survivor = (wa, "lv-q") if first["worker"] == "lv-p" else (wb, "lv-p")
    os.killpg(paused.pid, signal.SIGSTOP)  # its sockets stay open: the connection watch sees nothing
    try:
        wait_for(lambda: read_events(rclient, namespace, 10), 30, message="the paused worker to be declared dead")
        assert job.get(timeout=30)["worker"] == survivor
    finally:
        os.killpg(paused.pid, signal.SIGCONT)
    (event,) = read_events(rclient, namespace, 10)
    assert event["worker"] == paused.worker_id
    assert event["reason"].startswith("no heartbeat for"), event["reason"]


class AofRedis:
    """A private redis-server with append-only on, restartable on its port with its data."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sentinel-liveness-")
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen([redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _answers(client), 10, message="the private redis-server")
        client.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _answers(client):
    try:
        return client.ping()
    except redis.RedisError:
        return False


@pytest.fixture
def aof_redis():
    server = AofRedis()
    server.start()
    yield server
    server.remove()


def test_a_redis_restart_fails_nobody_over(workers, aof_redis, namespace):
    env = {"REDIS_URL": aof_redis.url}
    client = redis.Redis.from_url(aof_redis.url, decode_responses=True)
    wa, wb = start(workers, "lv-r", "lv-s", env=env, client=client, namespace=namespace)
    index = LivenessIndex(client, namespace)
    wait_for(lambda: len(index.all()) == 2, 10, message="both liveness connections recorded")
    before = {r.worker_id: r.client_id for r in index.all()}
    aof_redis.stop()
    time.sleep(3.0)  # down for 3 s: every connection is gone, the watcher's too
    aof_redis.start()
    wait_for(lambda: len(index.all()) == 2 and {r.worker_id: r.client_id for r in index.all()} != before, 15,
             message="both workers to reopen their liveness connection")
    time.sleep(3.0)  # several watch passes after the restart
    assert read_events(client, namespace, 10) == []
    reg = RedisRegistry(client, namespace, STALE_MS)
    assert {w: reg.get(w).status for w in ("lv-r", "lv-s")} == {"lv-r": "online", "lv-s": "online"}
    assert wa.alive() and wb.alive()
    for key in client.scan_iter(match=f"{namespace}*"):
        client.delete(key)
    client.close()


def _closed_client_id(url):
    gone = redis.Redis.from_url(url)
    client_id = gone.client_id()
    gone.close()
    return client_id


def test_a_closed_connection_is_confirmed_before_anyone_is_declared_dead(sentinel_env, celery_client, rclient,
                                                                        namespace, redis_url):
    """Another machine's worker: only after the grace, with a sibling on its machine still connected and no
    answer to ping. On this machine: only if its pid is gone."""
    cfg = get_config()
    failover = Failover(celery_client, cfg, actor="watcher", ping=lambda nodes, timeout: set())
    reg = failover.registry
    index = LivenessIndex(rclient, namespace)
    sibling = redis.Redis.from_url(redis_url)  # a live connection: the sibling's
    try:
        for wid in ("far-a", "far-b", "far-c", "near"):
            reg.register(wid, f"i-{wid}", {"nodename": f"{wid}@elsewhere", "queues": ["build"], "concurrency": 1})
        index.record(LiveConnection("far-a", "i-far-a", _closed_client_id(redis_url), "m1", 101, "boot-m1:pid:[1]"))
        index.record(LiveConnection("far-b", "i-far-b", sibling.client_id(), "m1", 102, "boot-m1:pid:[1]"))
        index.record(LiveConnection("far-c", "i-far-c", _closed_client_id(redis_url), "m2", 103, "boot-m2:pid:[1]"))
        index.record(LiveConnection("near", "i-near", _closed_client_id(redis_url), "here", os.getpid(), pid_scope()))
        long_ago = int(time.time() * 1000) - 60_000
        rclient.zadd(reg.live_key, {wid: long_ago for wid in ("far-a", "far-b", "far-c", "near")})
        rclient.hset(reg.worker_key("far-a"), "last_beat", long_ago)
        watch = ConnectionWatch(failover, grace_ms=300, interval_ms=1000, is_leader=lambda: True,
                                leader=lambda: None)
        assert watch.step() == []  # gone, but not for the grace yet
        time.sleep(0.4)
        (event,) = watch.step()
        assert event["worker"] == "far-a" and "no answer to ping, while far-b on the same host is connected" \
            in event["reason"] and "no heartbeat for" in event["reason"]
        time.sleep(0.4)
        assert watch.step() == []
        # far-c: nobody else on its machine is connected (its network, not its process); near: its pid runs
        offline = {w for w in ("far-a", "far-b", "far-c", "near") if reg.get(w).status == "offline"}
        assert offline == {"far-a"}
        assert {r.worker_id for r in index.all()} == {"far-b", "far-c", "near"}
    finally:
        sibling.close()
