"""The lease store's own guarantees against a real Redis: tokens that never go backwards, reads
that write nothing, waiting that is woken by the release (no polling), and the private connection
(EVALSHA, NOSCRIPT, WAIT on the same connection, a Redis restart)."""
import os
import threading
import time

import pytest
import redis

from sentinel_celery.cluster.snapshot import collect_snapshot
from sentinel_celery.config import load_config
from sentinel_celery.ops.embedded import EmbeddedRedis
from sentinel_celery.state.direct import DirectConnection, LuaScript
from sentinel_celery.state.leases import LockContended, RedisLeaseBackend, get_backend, lease, try_acquire


class PrivateRedis:
    """A redis-server of the test's own on a free port, which it can restart empty on that port."""

    def __init__(self):
        self.server = EmbeddedRedis()
        self.url = self.server.start()

    def restart_empty(self) -> None:
        self.server.stop()
        self.server = EmbeddedRedis(port=self.server.port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


def _server_ms(client) -> int:
    sec, usec = client.time()
    return sec * 1000 + usec // 1000


def test_tokens_never_go_backwards_when_the_counter_is_lost_or_behind(sentinel_env, rclient, namespace):
    first = try_acquire("deploy:prod", 30, renew=False)
    assert first.token >= (_server_ms(rclient) - 5000) * 1000  # from Redis' clock, not from 1
    assert first.release()
    rclient.delete(f"{namespace}lease:fence")  # Redis restarted empty, or a replica without the counter
    second = try_acquire("deploy:prod", 30, renew=False)
    assert second.token > first.token
    assert second.release()
    ahead = second.token + 10**12  # a counter ahead of the clock (many acquisitions per ms) still counts
    rclient.set(f"{namespace}lease:fence", ahead)
    third = try_acquire("deploy:prod", 30, renew=False)
    assert third.token == ahead + 1
    assert third.release()
    tokens = []
    for i in range(200):  # more than one per millisecond: still strictly increasing
        held = try_acquire(f"burst:{i % 3}", 30, renew=False)
        tokens.append(held.token)
        held.release()
    assert tokens == sorted(set(tokens)) and tokens[0] > third.token


def _commands(client) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def test_listing_stats_and_a_metrics_scrape_write_nothing(sentinel_env, private_redis):
    server, client = private_redis
    backend = RedisLeaseBackend(client, "ro:")
    held = try_acquire("env:prod", 30, worker="w1", backend=backend, renew=False)
    released = try_acquire("build:1", 30, worker="w1", backend=backend, renew=False)
    released.release()
    client.zadd("ro:leases:recent", {"build:old": 1})  # past the retention: left for the next acquire to trim
    cfg = load_config(environ={**os.environ, "SENTINEL_NAMESPACE": "ro:", "REDIS_URL": server.url})
    before = _commands(client)
    assert [h["name"] for h in backend.held()] == ["env:prod"]
    assert [h["name"] for h in backend.held_by("w1")] == ["env:prod"] and backend.held_by("w2") == []
    assert {r["name"] for r in backend.stats()} == {"env:prod", "build:1"}
    assert backend.holder("env:prod")["token"] == held.token
    snapshot = collect_snapshot(cfg, client=client)
    assert snapshot["leases"]["held"] == 1 and snapshot["leases"]["names"] == 2
    after = _commands(client)
    used = {name for name in after if after[name] - before.get(name, 0) > 0} - {"info"}
    assert used, "the reads sent no command at all?"
    flags = {name: client.execute_command("COMMAND", "INFO", name.split("|")[0])[name.split("|")[0]]["flags"]
             for name in used}
    writes = {name for name in used if "write" in flags[name] or name in ("eval", "evalsha")}
    assert not writes, f"reads wrote to Redis with {sorted(writes)}"
    assert client.zscore("ro:leases:recent", "build:old") == 1
    try_acquire("build:2", 30, backend=backend, renew=False).release()
    assert client.zscore("ro:leases:recent", "build:old") is None  # the acquire trims


def test_a_waiter_is_woken_by_the_release_and_does_not_poll(sentinel_env, rclient, namespace):
    holder = try_acquire("contended", 30, renew=False)
    released_at = []

    def release_later():
        time.sleep(1.5)
        released_at.append(time.monotonic())
        holder.release()

    threading.Thread(target=release_later).start()
    cpu = time.process_time()
    with lease("contended", ttl=30, wait=20) as got:
        acquired_at = time.monotonic()
        cpu = time.process_time() - cpu
        assert got.token > holder.token
    assert acquired_at >= released_at[0]
    stats = {s["name"]: s for s in get_backend().stats()}["contended"]
    assert stats["conflicts"] == 1 and stats["waits"] == 1  # one try before, one after the release
    assert cpu < 0.5  # blocked in Redis, not spinning (this thread and the releasing one)
    assert acquired_at - released_at[0] < 1.0  # woken by the release, not by the 20 s budget


def test_a_waiter_gets_a_lease_whose_holder_died_when_its_ttl_runs_out(sentinel_env):
    dead = try_acquire("abandoned", 1.0, renew=False)  # never renewed, never released
    with lease("abandoned", ttl=30, wait=20) as got:
        assert got.token > dead.token
    stats = {s["name"]: s for s in get_backend().stats()}["abandoned"]
    assert stats["conflicts"] == 1 and stats["waits"] == 1


def test_every_waiter_gets_its_turn_one_release_at_a_time(sentinel_env, rclient, namespace):
    holder = try_acquire("queue", 30, renew=False)
    order, errors = [], []

    def waiter(i):
        try:
            with lease("queue", ttl=30, wait=30, worker=f"w{i}") as got:
                order.append(got.token)
                time.sleep(0.05)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    holder.release()
    for t in threads:
        t.join(30)
    assert not errors and len(order) == 3 and order == sorted(order)
    stats = {s["name"]: s for s in get_backend().stats()}["queue"]
    assert stats["acquisitions"] == 4 and stats["conflicts"] <= 3 + 3  # each waiter retried at most once


def test_fencing_a_worker_wakes_those_waiting_for_its_lease(sentinel_env):
    try_acquire("env:staging", 60, worker="gone", renew=False)
    got = []
    waiter = threading.Thread(target=lambda: got.append(try_and_hold()))

    def try_and_hold():
        with lease("env:staging", ttl=30, wait=20) as held:
            return held.token

    waiter.start()
    time.sleep(0.5)
    assert get_backend().fence_worker("gone") == ["env:staging"]
    waiter.join(10)
    assert got and not waiter.is_alive()


def test_contended_without_wait_raises_at_once(sentinel_env):
    holder = try_acquire("single", 30, renew=False)
    with pytest.raises(LockContended) as err:
        with lease("single", wait=[]):
            pass
    assert err.value.token == holder.token
    holder.release()


ECHO = LuaScript("return {ARGV[1], redis.call('INCR', KEYS[1])}")


def test_direct_connection_loads_scripts_waits_on_the_same_connection_and_survives_a_restart(private_redis):
    server, client = private_redis
    direct = DirectConnection(client)
    assert direct.run(ECHO, ["n"], ["a"]) == ["a", 1]  # NOSCRIPT on a fresh Redis: loaded, then run
    assert client.script_exists(ECHO.sha) == [True]
    assert direct.run(ECHO, ["n"], ["b"], wait=(0, 10)) == (["b", 2], 0)  # no replicas: WAIT answers 0
    ids = {c["id"] for c in client.client_list() if c["cmd"] in ("wait", "evalsha")}
    assert len(ids) == 1  # script and WAIT went over one connection
    client.script_flush()
    assert direct.run(ECHO, ["n"], ["c"], wait=(0, 10)) == (["c", 3], 0)
    server.restart_empty()  # the idle private connection is broken, the scripts are gone
    assert direct.run(ECHO, ["n"], ["d"]) == ["d", 1]
    direct.close()


def test_leases_keep_working_across_a_redis_restart(private_redis):
    server, client = private_redis
    backend = RedisLeaseBackend(client, "rs:")
    first = try_acquire("job", 30, backend=backend, renew=False)
    assert first.release()
    server.restart_empty()
    second = try_acquire("job", 30, backend=backend, renew=False)
    assert second.token > first.token  # the counter was lost with the data; the clock floor holds
    assert second.release()
